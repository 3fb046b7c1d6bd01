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


@pytest.fixture
def run_copy(demo_run, tmp_path):
    import shutil

    run = RunDir(tmp_path / "copy")
    shutil.copytree(demo_run.root, run.root)
    return run


def _current_vectors(run, vectors, name="bad"):
    """Publish ``vectors`` (for the run's 200 items, by its model) as vectors/current; returns the version."""
    from indexing.vectors import read_vectors, write_vectors

    ids, _, manifest = read_vectors(lifecycle.current_dir(run.vectors))
    import numpy as np

    if len(vectors) != len(ids):
        ids = np.array([f"item{i}" for i in range(len(vectors))], dtype=object)
    write_vectors(run.vectors / name, ids, vectors, manifest["model_version"], num_shards=2)
    lifecycle.VersionedRoot(run.vectors).publish(name)
    return name


@pytest.mark.parametrize("case", ["all-zero", "unnormalised", "3e38", "identical", "recall"])
def test_twotower_index_runs_the_publish_gate_and_publishes_nothing_refused(run_copy, capsys, case):
    # issue 13 item 6: each of these was published through `twotower index` and hot-reloaded by a server
    import numpy as np

    from indexing.synthetic import clustered_vectors

    run = run_copy
    before = lifecycle.current_version(run.index)
    versions = lifecycle.list_versions(run.index)
    good = clustered_vectors(200, 16, seed=2)[0]
    sets, expected = [], None
    if case == "all-zero":
        vectors, expected = np.zeros_like(good), "200 of 200 vectors are all zeros"
    elif case == "unnormalised":
        vectors, expected = good * 3, "200 of 200 vectors are not L2-normalised"
    elif case == "3e38":
        vectors, expected = np.full_like(good, 3e38), "200 of 200 vectors are not L2-normalised"
    elif case == "identical":
        vectors, expected = np.repeat(good[:1], 200, axis=0), "all 200 vectors are identical"
    else:
        vectors = clustered_vectors(3000, 16, seed=1)[0]
        sets = ["--set", "index.factory=IVF256,PQ8", "--set", "index.nprobe=1", "--set", "index.recall_k=100",
                "--set", "index.recall_queries=200"]
        expected = "below recall_floor=0.95 (factory IVF256,PQ8, search params {'nprobe': 1})"
    _current_vectors(run, vectors)
    capsys.readouterr()
    assert main(["index", "--run", str(run.root), *sets]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("twotower index: error: index validation failed, nothing "
                                                         "was published")
    assert expected in err, err
    assert lifecycle.current_version(run.index) == before and lifecycle.list_versions(run.index) == versions


def test_twotower_index_publishes_good_vectors_under_the_lease_and_refuses_while_a_job_holds_it(run_copy, capsys):
    run = run_copy
    with lifecycle.VersionedRoot(run.index).lock("the nightly rebuild"):
        assert main(["index", "--run", str(run.root)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{run.index} is locked by the nightly rebuild (host " in err
    assert main(["index", "--run", str(run.root)]) == 0
    new = lifecycle.current_version(run.index)
    assert new.startswith("000001-") and lifecycle.list_versions(run.index)[-1] == new
    manifest = artifacts.verify_manifest(run.index / new)
    assert manifest["vectors_version"] == lifecycle.current_version(run.vectors)
    assert manifest["model_version"] == run.model_version()


def test_rollback_to_an_index_of_another_model_is_refused(run_copy, capsys):
    # issue 13 item 7: it was accepted, and then `serve` refused to start
    import json as _json

    run = run_copy
    first = lifecycle.current_version(run.index)
    assert main(["index", "--run", str(run.root)]) == 0
    manifest_path = run.index / first / "manifest.json"
    manifest = _json.loads(manifest_path.read_text())
    manifest["model_version"] = "an-older-model"
    manifest_path.write_text(_json.dumps(manifest))
    capsys.readouterr()
    assert main(["rollback", "--run", str(run.root), "--to", first]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert f"{run.index}/{first} was made by model version 'an-older-model' but the run's model {run.model} is " \
           f"model version '{run.model_version()}'" in err
    assert lifecycle.current_version(run.index) != first
