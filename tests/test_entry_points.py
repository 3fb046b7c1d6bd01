"""Every command-line entry point follows ``core.cli``'s policy (issue 12 item 4): a bad argument is ONE line
``<prog>: error: ...`` on stderr with exit 2, and a genuine bug still raises (a traceback, never swallowed)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _twotower(argv):
    from twotower.cli import main
    return main(argv)


def _scaling(argv):
    from twotower.studies.scaling.__main__ import main
    return main(argv)


def _ssl(argv):
    from twotower.studies.ssl.__main__ import main
    return main(argv)


def _serving(argv):
    from serving.__main__ import main
    return main(argv)


def _beam_jobs(argv):
    from beam_jobs.__main__ import main
    return main(argv)


def _embed(argv):
    from beam_jobs.embed_items import main
    return main(argv)


def _rebuild(argv):
    from beam_jobs.rebuild_index import main
    return main(argv)


def _dask_demo(argv):
    from beam_jobs.dask_cluster import demo
    return demo(argv)


# (entry point, argv with a value argparse accepts but the command refuses, prog, words the message must hold)
BAD_VALUES = {
    "twotower": (_twotower, ["train", "--run", "{tmp}/r", "--set", "train.epochs=many"], "twotower train",
                 "train.epochs: expected int, got str 'many'"),
    "scaling": (_scaling, ["--grid", "{tmp}/nope.yaml", "--out", "{tmp}/out"], "python -m twotower.studies.scaling",
                "grid file {tmp}/nope.yaml does not exist"),
    "ssl": (_ssl, ["--grid", "{tmp}/nope.yaml", "--out", "{tmp}/out"], "python -m twotower.studies.ssl",
            "SSL study grid {tmp}/nope.yaml does not exist"),
    "twotower-study": (_twotower, ["study", "ssl", "--grid", "{tmp}/nope.yaml", "--out", "{tmp}/out"],
                       "twotower study", "SSL study grid {tmp}/nope.yaml does not exist"),
    "serving": (_serving, ["--run", "{tmp}/missing"], "python -m serving", "{tmp}/missing/model/query_tower does not exist"),
    "beam_jobs": (_beam_jobs, ["rollback", "--run", "{tmp}", "--to", "v9"], "python -m beam_jobs rollback", "v9"),
    "embed_items": (_embed, ["--run", "{tmp}/missing"], "python -m beam_jobs.embed_items", "{tmp}/missing/model/item_tower"),
    "rebuild_index": (_rebuild, ["--run", "{tmp}", "--set", "embed.nope=1"], "python -m beam_jobs.rebuild_index",
                      "unknown config key 'nope' in 'embed.nope'"),
}

# (entry point, argv argparse itself refuses, prog)
BAD_FLAGS = {
    "twotower": (_twotower, ["trian"], "twotower"),
    "twotower-sub": (_twotower, ["serve", "--run", "r", "--port", "eighty"], "twotower serve"),
    "scaling": (_scaling, ["--out", "o"], "python -m twotower.studies.scaling"),
    "ssl": (_ssl, ["--grid", "g.yaml"], "python -m twotower.studies.ssl"),
    "twotower-study": (_twotower, ["study", "ssl", "--grid", "g.yaml"], "twotower study ssl"),
    "serving": (_serving, ["--run", "r", "--port", "eighty"], "python -m serving"),
    "beam_jobs": (_beam_jobs, ["rollback"], "python -m beam_jobs rollback"),
    "embed_items": (_embed, ["--num-shards", "many"], "python -m beam_jobs.embed_items"),
    "rebuild_index": (_rebuild, ["--recall-floor", "high"], "python -m beam_jobs.rebuild_index"),
    "dask_demo": (_dask_demo, ["--workers", "many"], "python -m beam_jobs.dask_cluster demo"),
}


def _fill(argv, tmp):
    return [a.replace("{tmp}", str(tmp)) for a in argv]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_is_one_line_and_exit_2(name, tmp_path, capsys):
    main, argv, prog, words = BAD_VALUES[name]
    assert main(_fill(argv, tmp_path)) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert words.replace("{tmp}", str(tmp_path)) in lines[0]


@pytest.mark.parametrize("name", sorted(BAD_FLAGS))
def test_a_bad_flag_is_one_line_and_exit_2(name, capsys):
    main, argv, prog = BAD_FLAGS[name]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: error: ") and f"see {prog} --help" in err, err


def test_beam_jobs_unknown_job_is_one_line(capsys):
    assert _beam_jobs(["upload"]) == 2
    assert capsys.readouterr().err == ("python -m beam_jobs: error: unknown job 'upload'; choose one of embed, "
                                       "rebuild, rollback (see python -m beam_jobs --help)\n")


def _bug(*args, **kwargs):
    raise AttributeError("'NoneType' object has no attribute 'shape'")


# (entry point, argv that reaches the command body, the function to replace with a bug)
BUGS = {
    "twotower": (_twotower, ["train", "--run", "{tmp}/r"], "twotower.commands.resolve_config"),
    "scaling": (_scaling, ["--grid", "g.yaml", "--out", "{tmp}"], "twotower.studies.scaling.sweep.run_sweep"),
    "ssl": (_ssl, ["--grid", "g.yaml", "--out", "{tmp}"], "twotower.studies.ssl.sweep.run_study"),
    "twotower-study": (_twotower, ["study", "ssl", "--grid", "g.yaml", "--out", "{tmp}"],
                       "twotower.studies.ssl.sweep.run_study"),
    "serving": (_serving, ["--run", "{tmp}"], "serving.app.serve"),
    "beam_jobs": (_beam_jobs, ["rollback", "--run", "{tmp}"], "indexing.store.rollback_index"),
    "embed_items": (_embed, ["--run", "{tmp}"], "beam_jobs.embed_items.run_embed"),
    "rebuild_index": (_rebuild, ["--run", "{tmp}"], "beam_jobs.rebuild_index.run_rebuild"),
    "dask_demo": (_dask_demo, ["--dir", "{tmp}"], "beam_jobs.testing.export_hashing_item_tower"),
}


@pytest.mark.parametrize("name", sorted(BUGS))
@pytest.mark.parametrize("error", [AttributeError, TypeError])
def test_a_bug_is_not_swallowed(name, error, tmp_path, monkeypatch, capsys):
    main, argv, target = BUGS[name]

    def bug(*args, **kwargs):
        raise error("a genuine bug")

    monkeypatch.setattr(target, bug)
    with pytest.raises(error, match="a genuine bug"):
        main(_fill(argv, tmp_path))
    assert "error:" not in capsys.readouterr().err


def _run(args, env_extra=None, tmp=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TWOTOWER_DEBUG", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args], cwd=tmp or ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_real_processes_print_one_line_or_a_traceback(tmp_path):
    bad = ["-m", "twotower.cli", "train", "--run", str(tmp_path / "r"), "--set", "train.epochs=many"]
    proc = _run(bad)
    assert proc.returncode == 2, proc.stderr
    from twotower import DEFAULT_CONFIG

    assert proc.stderr.splitlines() == [
        f"twotower train: error: {DEFAULT_CONFIG} with --set train.epochs: "
        "train.epochs: expected int, got str 'many'"], proc.stderr
    debug = _run(bad, {"TWOTOWER_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "ConfigError: " in debug.stderr
    bug = _run(["-c", "import sys, twotower.commands as c\n"
                "def bug(*a): raise TypeError('a genuine bug')\n"
                "c.resolve_config = bug\n"
                "from twotower.cli import main\n"
                f"sys.exit(main(['train', '--run', {str(tmp_path / 'r')!r}]))"])
    assert bug.returncode == 1
    assert "Traceback (most recent call last)" in bug.stderr and "TypeError: a genuine bug" in bug.stderr


def test_a_held_job_lock_is_one_line_not_a_traceback(tmp_path, capsys):
    # issue 13 item 8: a second rebuild hitting the lock printed a traceback through `twotower rebuild`.
    import os
    import socket

    from core.cli import run_main
    from core.lifecycle import VersionedRoot

    def second_job():
        with VersionedRoot(tmp_path).lock("the index rebuild"):
            pass

    with VersionedRoot(tmp_path).lock("the first rebuild"):
        assert run_main("twotower rebuild", second_job) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"twotower rebuild: error: {tmp_path} is locked by the first rebuild (host "
                          f"{socket.gethostname()}, pid {os.getpid()}) since ")
    assert "run the index rebuild again" in err


def test_set_overrides_that_only_work_together(tmp_path, capsys):
    # issue 13 item 12: `--set data.source=tabular --set data.path=X` failed with "needs data.path" because each
    # override was validated alone. Now the config is accepted and the loader reports the real problem.
    schema = tmp_path / "schema.yaml"
    assert _twotower(["data", "describe", "--set", "data.source=tabular", "--set", f"data.path={schema}"]) == 2
    err = capsys.readouterr().err
    assert "needs data.path" not in err
    assert err.startswith(f"twotower data: error: schema file {schema} does not exist"), err
