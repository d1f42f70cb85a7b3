"""A fork server for the suite's CLI runs: one Python per test worker that has imported the
command line's modules once, and forks a child per ``nucseg-rt`` run.

Each child is a separate process running ``nucseg_rt.cli.main(argv)`` as the console script
does, with the run's environment, working directory, stdin from ``/dev/null`` and its stdout
and stderr in files; its exit status is the run's. What it saves is the interpreter start-up and
the imports (about 0.5-0.9 s a run). The server only imports: numba's and onnxruntime's thread
pools start in the child (the OpenBLAS threads of numpy and scipy exist; OpenBLAS handles a
fork).

Runs that check the start-up itself (``--help`` imports nothing heavy, the console script, code
run before the import such as a patched writer, Ctrl-C) spawn a fresh interpreter
(``helpers.run_cli(..., fresh=True)``); ``NUCSEG_TEST_FRESH=1`` makes every run do so.

Protocol (JSON lines on the server's stdin/stdout): first ``{"ready": [the modules it imported]}``;
then per request ``{"argv", "env", "cwd", "out", "err", "hide"}`` (``hide``: modules the run sees
as not installed, never one of those imported) the replies ``{"pid"}`` once forked, then
``{"status"}`` (as from ``subprocess``: the exit code, or minus the signal that ended the
child).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: what the server imports before serving (the command line's own imports, done once)
PRELOAD = ("nucseg_rt.cli._main", "nucseg_rt.cli._app", "nucseg_rt.batch", "nucseg_rt.watch",
           "nucseg_rt.segment", "nucseg_rt.models", "nucseg_rt.network.engine", "nucseg_rt.masks",
           "onnxruntime", "onnx", "tifffile", "rich.console", "rich.progress")

_SERVE = r"""
import importlib, json, os, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
# numba's typing registries (numba.np.arraymath and scipy.linalg with it: 0.5 s), which every
# process loads on its first compiled function; loading them runs nothing
from numba.core.registry import cpu_target
cpu_target.target_context.refresh()
sys.stdout.write(json.dumps({"ready": sorted(k for k, m in sys.modules.items() if m)}) + "\n")
sys.stdout.flush()
reply = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        break
    reply.write(json.dumps({"pid": pid}) + "\n"); reply.flush()
    _, status = os.waitpid(pid, 0)
    reply.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n"); reply.flush()
else:
    sys.exit(0)
# the child: the run, as `python -m nucseg_rt.cli ARGV` would do it, with the modules of "hide"
# uninstalled (as `sys.modules[name] = None` before any import does; none is imported here)
for name in req["hide"]:
    sys.modules[name] = None
os.environ.clear(); os.environ.update(req["env"])
os.chdir(req["cwd"])
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
for fd, path in ((1, req["out"]), (2, req["err"])):
    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(f, fd)
    os.close(f)
sys.stdin = open(0, closefd=False)
sys.stdout = open(1, "w", closefd=False)
sys.stderr = open(2, "w", closefd=False)
reply.close()
sys.argv = ["nucseg-rt", *req["argv"]]
from nucseg_rt.cli import main
try:
    code = main(req["argv"])
except SystemExit as stop:
    code = stop.code
except BaseException:  # as Python's own handler: the traceback, exit 1
    import traceback
    traceback.print_exc()
    code = 1
if not isinstance(code, int):
    if code is not None:
        print(code, file=sys.stderr)
    code = 0 if code is None else 1
# Python's own exit, minus the C libraries' exit handlers: those inherited from the server wait
# on thread pools the fork did not copy (the child would hang in a futex)
import atexit, logging, threading
threading._shutdown()
atexit._run_exitfuncs()
logging.shutdown()
sys.stdout.flush(); sys.stderr.flush()
os._exit(code)
"""


class CliServer:
    """The fork server of one test process; :meth:`run` gives a ``CompletedProcess``."""

    def __init__(self):
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVE, *PRELOAD],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self._buf = b""
        self._dir = tempfile.TemporaryDirectory(prefix="nucseg-cli-")
        self._count = 0
        ready = self._read(300)
        if not ready.get("ready"):
            raise RuntimeError(f"the CLI fork server did not start: {ready}")
        #: the modules imported before any fork: a run cannot hide these
        self.imported = frozenset(ready["ready"])

    def _read(self, timeout: float) -> dict:
        """The server's next reply line. Its pipe is read unbuffered, bytes into ``self._buf``:
        with a buffered reader, one read could take two replies (a child that ends at once),
        and ``select`` would then wait for a second that already arrived."""
        end = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], max(end - time.monotonic(), 0))
            if not ready:
                raise TimeoutError(f"the CLI fork server gave no answer in {timeout:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the CLI fork server ended (code {self._proc.poll()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _send(self, req: dict) -> None:
        data = memoryview(json.dumps(req).encode() + b"\n")
        while data:  # the raw pipe may take a large request (the environment) in parts
            data = data[os.write(self._proc.stdin.fileno(), data):]

    def alive(self) -> bool:
        return self._proc.poll() is None

    def run(self, args: list[str], env: dict[str, str], timeout: float,
            hide: tuple[str, ...] = ()) -> subprocess.CompletedProcess | None:
        """One ``nucseg-rt ARGS`` run in a forked child, the modules ``hide`` uninstalled;
        ``TimeoutExpired`` (the child killed) after ``timeout`` seconds, as ``subprocess.run``
        does. None when the server imported a module of ``hide`` (run it fresh)."""
        if self.imported.intersection(hide):
            return None
        self._count += 1
        out = Path(self._dir.name) / f"{self._count}.out"
        err = Path(self._dir.name) / f"{self._count}.err"
        req = {"argv": args, "env": env, "cwd": os.getcwd(), "out": str(out), "err": str(err),
               "hide": list(hide)}
        self._send(req)
        end = time.monotonic() + timeout
        pid = self._read(timeout)["pid"]
        try:
            status = self._read(end - time.monotonic())["status"]
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            self._read(30)
            raise subprocess.TimeoutExpired(["nucseg-rt", *args], timeout) from None
        texts = [p.read_text(errors="replace") for p in (out, err)]
        out.unlink()
        err.unlink()
        return subprocess.CompletedProcess(["nucseg-rt", *args], status, *texts)

    def close(self) -> None:
        """End the server (its stdin closed) and remove its output folder."""
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()
        self._dir.cleanup()
