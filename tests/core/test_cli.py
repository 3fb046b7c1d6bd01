"""``core.cli``: the one error policy (one line + exit 2 for user errors, tracebacks for bugs, 130 on Ctrl-C)."""
import pytest

from core.cli import ArgumentParser, OperationFailed, run_main
from core.strict import ConfigError


def _raise(exc):
    raise exc


@pytest.mark.parametrize("exc", [
    ValueError("bad value for k"), ConfigError("train.epochs: expected int"), FileNotFoundError("runs/x missing"),
    FileExistsError("runs/x exists"), OperationFailed("index/.lock is locked by job A"),
])
def test_user_errors_are_one_line_and_exit_2(exc, capsys, monkeypatch):
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)
    assert run_main("prog sub", _raise, exc) == 2
    err = capsys.readouterr().err
    assert err == f"prog sub: error: {exc}\n"


def test_multi_line_messages_are_joined_into_one_line(capsys, monkeypatch):
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)
    assert run_main("p", _raise, ValueError("first\n  second\n\nthird")) == 2
    assert capsys.readouterr().err == "p: error: first | second | third\n"


@pytest.mark.parametrize("exc", [TypeError("unsupported operand"), AttributeError("no attribute 'x'"),
                                 KeyError("k"), RuntimeError("boom"), ZeroDivisionError("division by zero")])
def test_bugs_are_not_swallowed(exc, capsys, monkeypatch):
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)
    with pytest.raises(type(exc)):  # propagates → the interpreter prints the traceback and exits 1
        run_main("p", _raise, exc)
    assert capsys.readouterr().err == ""


def test_debug_env_re_raises_user_errors(monkeypatch):
    monkeypatch.setenv("TWOTOWER_DEBUG", "1")
    with pytest.raises(ValueError, match="bad"):
        run_main("p", _raise, ValueError("bad"))


def test_keyboard_interrupt_is_130_with_a_line(capsys, monkeypatch):
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)
    assert run_main("p", _raise, KeyboardInterrupt()) == 130
    assert capsys.readouterr().err == "p: interrupted; published versions are unchanged\n"


def test_result_is_the_exit_status():
    assert run_main("p", lambda: None) == 0
    assert run_main("p", lambda a, b=0: a + b, 1, b=2) == 3


def test_argparse_errors_are_one_line_exit_2(capsys):
    parser = ArgumentParser(prog="tool")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("go").add_argument("--n", type=int)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["go", "--n", "many"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "tool go: error: argument --n: invalid int value: 'many' (see tool go --help)\n"
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["stop"])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
