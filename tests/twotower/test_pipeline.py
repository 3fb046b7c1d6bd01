"""End to end through the CLI on a tiny synthetic dataset: data → train → rebuild (Beam) → eval → compare."""
import json

import pytest

from core import artifacts

from core import lifecycle
from twotower.cli import main
from core.rundir import RunDir

TINY = [
    "name=tiny", "data.source=synthetic",
    "data.synthetic.num_users=300", "data.synthetic.num_items=200", "data.synthetic.num_interactions=6000",
    "train.epochs=2", "train.batch_size=256", "train.verbose=0", "train.tensorboard=false",
    "train.tower.output_dim=16", "train.tower.id_embedding_dim=16", "train.tower.feature_embedding_dim=8",
    "train.tower.hidden_units=[32]", "train.tower.max_history=20",
    "index.factory=Flat", "index.recall_queries=100",
    "eval.bootstrap_samples=50", "eval.ks=[10, 50]",
]


def _sets(pairs):
    out = []
    for p in pairs:
        out += ["--set", p]
    return out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["demo", "--config", "configs/demo.yaml", "--run", str(root), *_sets(TINY)]) == 0
    return RunDir(root)


def test_demo_writes_every_artifact_of_one_model_version(demo_run, capsys):
    run = demo_run
    version = run.model_version()
    assert run.config.is_file() and "synthetic" in run.config.read_text()
    vec = artifacts.verify_manifest(lifecycle.current_dir(run.vectors))
    idx = artifacts.verify_manifest(lifecycle.current_dir(run.index))
    assert vec["model_version"] == version and idx["model_version"] == version
    assert vec["count"] == 200
    metrics = json.loads((run.eval / "tiny" / "metrics.json").read_text())
    assert metrics and (run.eval / "report.md").is_file()


def test_eval_and_compare_through_the_cli(demo_run, capsys, tmp_path):
    assert main(["eval", str(demo_run.root), "--no-baselines"]) == 0
    out = capsys.readouterr().out
    assert "| tiny | exact |" in out and "| tiny | index |" in out
    # a run compared with itself: every paired difference is exactly zero
    assert main(["compare", str(demo_run.root), str(demo_run.root), "--out", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "compare.json").read_text())
    scored = [row for row in table if row["n_queries"] > 0]
    assert scored and all(abs(row["diff"]) < 1e-12 and not row["excludes_zero"] for row in scored)
    assert all(row["diff"] is None for row in table if row["n_queries"] == 0)  # empty slices: no number


def test_eval_refuses_vectors_from_another_model_version(demo_run, tmp_path, capsys):
    import shutil

    run = RunDir(tmp_path / "copy")
    shutil.copytree(demo_run.root, run.root)
    run.model_version_file.write_text("some-other-version\n")
    assert main(["eval", str(run.root), "--no-baselines"]) == 2
    err = capsys.readouterr().err
    assert "made by model version" in err and "some-other-version" in err and "twotower rebuild" in err


def test_eval_of_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "twotower eval: error:" in err and "twotower train --run" in err


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--run", str(tmp_path / "r"), "--set", "train.epocs=1"]) == 2
    assert "unknown config key 'epocs' in 'train.epocs'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_scaling_command_reports_a_missing_grid_clearly(tmp_path, capsys):
    assert main(["scaling", "--grid", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "grid file" in err and "does not exist" in err and "configs/scaling_default.yaml" in err
