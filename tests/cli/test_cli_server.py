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
