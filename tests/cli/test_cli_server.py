"""The suite's CLI fork server (tests/cli_server.py) gives what a fresh interpreter gives: exit
code, stdout and stderr; a module to hide that the server imported sends the run to a fresh one."""

from __future__ import annotations

from helpers import run_cli


def test_forked_run_equals_a_fresh_one():
    for args in (["--version"], ["remove-model", "gone"], ["segment", "--model", "x"]):
        forked, fresh = run_cli(*args), run_cli(*args, fresh=True)
        assert forked.args[0] == "nucseg-rt" and fresh.args[0] != "nucseg-rt"
        assert (forked.returncode, forked.stdout, forked.stderr) == \
            (fresh.returncode, fresh.stdout, fresh.stderr), (forked, fresh)


def test_hidden_modules():
    hidden = run_cli("train", "--epochs", "1", hide=("torch",))  # not in the server: forked
    assert hidden.args[0] == "nucseg-rt"
    assert hidden.returncode == 1 and "needs PyTorch" in hidden.stderr, hidden.stderr
    numba_gone = run_cli("--version", hide=("numba",))  # imported by the server: a fresh run
    assert numba_gone.args[0] != "nucseg-rt" and numba_gone.returncode == 0


def test_two_replies_in_one_read_are_both_seen(tmp_path):
    """A child that ends before its replies are read makes the server write both first: the
    second must come from what was already received, not be waited for (seen in CI: a 300 s
    wait, then the late reply taken as the next run's)."""
    import fcntl
    import json
    import struct
    import termios
    import time

    from cli_server import CliServer
    from helpers import cli_env, wait_until

    def unread() -> int:  # bytes waiting in the server's reply pipe (FIONREAD: nothing consumed)
        raw = fcntl.ioctl(server._proc.stdout.fileno(), termios.FIONREAD, b"\0" * 4)
        return struct.unpack("i", raw)[0]

    # the pid reply is at most this long, so more bytes than that mean the status reply is there
    pid_reply = len(json.dumps({"pid": 2**22}) + "\n")  # Linux pids are below 2**22
    server = CliServer()
    try:
        server._send({"argv": ["--version"], "env": cli_env(), "cwd": str(tmp_path),
                      "out": str(tmp_path / "o"), "err": str(tmp_path / "e"), "hide": []})
        wait_until(lambda: unread() > pid_reply, "the run's end: both replies in the pipe", 30)
        t0 = time.monotonic()
        assert "pid" in server._read(10) and server._read(10) == {"status": 0}
        assert time.monotonic() - t0 < 5
        assert (tmp_path / "o").read_text().startswith("nucseg-rt ")
        proc = server.run(["--version"], cli_env(), 30)
        assert proc.returncode == 0 and proc.stdout.startswith("nucseg-rt ")
    finally:
        server.close()
