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
    # strong, learnable per-user taste (8 clusters, 95% of events in the user's), so a model that ignores who
    # asks is clearly worse (see test_the_model_beats_itself_with_query_vectors_shuffled_across_users)
    "data.synthetic.num_clusters=8", "data.synthetic.taste_strength=0.95", "data.synthetic.popularity_exponent=0.5",
    "train.epochs=5", "train.batch_size=256", "train.verbose=0", "train.tensorboard=false",
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
def _demo(tmp_path_factory):
    import contextlib
    import io

    root = tmp_path_factory.mktemp("runs") / "tiny"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--config", "configs/demo.yaml", "--run", str(root), *_sets(TINY)]) == 0
    return RunDir(root), printed.getvalue()


@pytest.fixture(scope="module")
def demo_run(_demo):
    return _demo[0]


def test_demo_prints_the_model_next_to_the_baselines_ease_included(_demo):
    run, out = _demo
    rows = [line.split(" | ")[0].lstrip("| ") for line in out.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["tiny", "tiny", "popularity", "random", "als-32", "bpr-32", "ease"], rows
    header = "| run | path | overall R@10 | overall R@50 | head R@10 | head R@50 | tail R@10 | tail R@50 |"
    assert header in out
    ease = json.loads((run.eval / "ease" / "metrics.json").read_text())["metadata"]
    assert ease["lambda_grid"] == [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0] and ease["l2"] in ease["lambda_grid"]
    assert ease["tuned_on"] == "validation ndcg@50 (overall)" and len(ease["validation"]) == 6
    assert f"ease: lambda = {ease['l2']:g}, the best validation ndcg@50 (overall) = " in out
    assert "over the grid [10, 30, 100, 300, 1000, 3000]" in out


def test_demo_writes_every_artifact_of_one_model_version(demo_run, capsys):
    run = demo_run
    version = run.model_version()
    assert run.config.is_file() and "synthetic" in run.config.read_text()
    vec = artifacts.verify_manifest(lifecycle.current_dir(run.vectors))
    idx = artifacts.verify_manifest(lifecycle.current_dir(run.index))
    assert vec["model_version"] == version and idx["model_version"] == version
    assert vec["count"] == 200
    # the index's recall is checked on the queries it serves: query-tower vectors of validation users (issue 15)
    assert idx["recall"]["query_source"] == "query_tower_valid_users" and idx["recall"]["num_queries"] > 10
    metrics = json.loads((run.eval / "tiny" / "metrics.json").read_text())
    assert metrics and (run.eval / "report.md").is_file()


def test_demo_metrics_are_sane_and_the_model_beats_random(demo_run):
    """What the demo's numbers must satisfy: recalls are fractions, a Flat index returns the exact top-K
    (index recall 1 and the same recall as exact search, in every slice), and the trained model is above
    the random baseline's confidence interval."""
    import math

    from eval.result import EvalResult

    model = EvalResult.load(demo_run.eval / "tiny")
    rand = EvalResult.load(demo_run.eval / "random")
    assert model.info["counts"]["num_cases"] == 300 and set(model.sources) == {"exact", "index", "index_vs_exact"}
    slices = sorted(set(model.summary["family"] + "/" + model.summary["slice"]))
    assert "overall/all" in slices and "popularity/head" in slices
    scored = 0
    for key in slices:
        for k in (10, 50):
            exact = model.value(f"recall@{k}", key, "exact")
            index = model.value(f"recall@{k}", key, "index")
            if math.isnan(exact):  # an empty slice has no number
                assert math.isnan(index)
                continue
            scored += 1
            assert 0.0 <= exact <= 1.0 and 0.0 <= index <= 1.0, (key, k, exact, index)
            assert 0.0 <= model.value(f"hitrate@{k}", key, "exact") <= 1.0
            assert index == pytest.approx(exact, abs=1e-12), (key, k)  # Flat: the index is exact search
            vs = model.value(f"index_recall@{k}", key, "index_vs_exact")
            assert math.isnan(vs) or vs == pytest.approx(1.0), (key, k, vs)
    assert scored >= 10
    assert model.value("index_recall@10", source="index_vs_exact") == pytest.approx(1.0)
    summary = model.summary.set_index(["source", "family", "slice"])
    rsummary = rand.summary.set_index(["source", "family", "slice"])
    for k in (10, 50):
        ours = summary.loc[("exact", "overall", "all")]
        theirs = rsummary.loc[("exact", "overall", "all")]
        assert 0.0 <= theirs[f"recall@{k}_lo"] <= theirs[f"recall@{k}"] <= theirs[f"recall@{k}_hi"] <= 1.0
        # the model's whole interval is above the random baseline's whole interval
        assert ours[f"recall@{k}_lo"] > theirs[f"recall@{k}_hi"], (k, ours[f"recall@{k}_lo"], theirs[f"recall@{k}_hi"])


def test_the_model_beats_itself_with_query_vectors_shuffled_across_users(demo_run):
    """The check above passes even when eval hands users the wrong query vectors: a model that has learned
    popularity beats random without knowing who asks. Here the reported recall must beat, paired per user
    (``eval.compare``), the same towers with the query vectors permuted across users (no user keeps their own):
    the null model that knows the catalogue but not the user."""
    import numpy as np

    from eval.compare import compare
    from eval.evaluate import evaluate_vectors
    from eval.result import EvalResult
    from twotower.config import load_config
    from twotower.pipeline import eval_inputs

    cfg = load_config(demo_run.config)
    x = eval_inputs(cfg, demo_run)
    model = EvalResult.load(demo_run.eval / "tiny")
    n = len(x.query_vectors)
    rng = np.random.default_rng(7)
    for _ in range(2):
        order = rng.permutation(n)
        rows = np.empty(n, dtype=np.int64)
        rows[order] = np.roll(order, 1)  # a random derangement: a cycle through a random order
        assert not np.any(rows == np.arange(n))
        shuffled = evaluate_vectors(x.query_vectors[rows], x.item_vectors, x.test_cases, x.exclusions, x.counts,
                                    cfg.eval, history_lengths=x.history_lengths, query_ids=x.queries.user_ids,
                                    name="shuffled")
        table = compare(model, shuffled).set_index(["family", "slice", "metric"])
        for k in (10, 50):
            row = table.loc[("overall", "all", f"recall@{k}")]
            assert row["lo"] > 0.1, (k, row["diff"], row["lo"], row["hi"])  # paired interval well above zero


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


def test_eval_says_when_no_index_is_published_and_grades_exact_only(demo_run, tmp_path, capsys):
    # issue 13 item 9: an empty index/current used to skip the index silently
    import shutil

    run = RunDir(tmp_path / "copy")
    shutil.copytree(demo_run.root, run.root)
    (run.index / lifecycle.CURRENT).write_text("")
    assert main(["eval", str(run.root), "--no-baselines"]) == 0
    out = capsys.readouterr().out
    assert "| tiny | index |" not in out
    assert f"index: not evaluated: {run.index / 'current'} is empty or missing (no index published)" in out
    assert "twotower rebuild --run" in out
    report = (run.eval / "report.md").read_text()
    assert "## Index retrieval\n\nNot evaluated: " in report and "is empty or missing" in report
    saved = json.loads((run.eval / "tiny" / "metrics.json").read_text())
    assert "is empty or missing" in saved["metadata"]["index_skipped"]
    # with the index published again, nothing says it was skipped
    assert main(["eval", str(demo_run.root), "--no-baselines"]) == 0
    assert "not evaluated" not in capsys.readouterr().out
    assert "Not evaluated" not in (demo_run.eval / "report.md").read_text()


def test_eval_of_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "twotower eval: error:" in err and "twotower train --run" in err


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--run", str(tmp_path / "r"), "--set", "train.epocs=1"]) == 2
    assert "unknown config key 'epocs' in 'train.epocs'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bad_rebuild_shards_is_a_clear_error(tmp_path, capsys):
    for bad in ("many", "0"):
        try:
            code = main(["rebuild", "--run", str(tmp_path / "r"), "--shards", bad])
        except SystemExit as exc:  # argparse's usage error
            code = exc.code
        assert code == 2
        assert f"expected 'auto' or a positive number of index shards, got '{bad}'" in capsys.readouterr().err
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
    assert lifecycle.sequence_of(new) is not None and lifecycle.list_versions(run.index)[-1] == new
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


def test_eval_of_a_run_on_s3_reads_through_the_verified_cache_and_writes_eval_objects(demo_run, s3_url, tmp_path,
                                                                                     capsys, monkeypatch):
    from core.storage import open_storage

    monkeypatch.setenv("TWOTOWER_CACHE", str(tmp_path / "cache"))
    store = open_storage(s3_url)
    for p in sorted(demo_run.root.rglob("*")):
        if p.is_file() and not p.relative_to(demo_run.root).as_posix().startswith("eval/") and ".lock" not in p.name:
            store.write_bytes(p.relative_to(demo_run.root).as_posix(), p.read_bytes())
    assert main(["eval", str(demo_run.root), "--no-baselines"]) == 0
    local_out = capsys.readouterr().out
    assert main(["eval", s3_url, "--no-baselines"]) == 0
    remote_out = capsys.readouterr().out  # the same numbers, read from object storage
    assert remote_out.replace(s3_url, str(demo_run.root)) == local_out and f"{s3_url}/eval/report.md" in remote_out
    remote_metrics = json.loads(store.read_bytes("eval/tiny/metrics.json"))
    local_metrics = json.loads((demo_run.eval / "tiny" / "metrics.json").read_text())
    assert {k: v for k, v in remote_metrics.items() if k != "timings"} == \
        {k: v for k, v in local_metrics.items() if k != "timings"}
    assert store.exists("eval/report.md") and not list((tmp_path / "cache").glob("eval-*"))
    # a truncated vectors shard on the store is refused before anything is graded
    vectors = lifecycle.current_version(demo_run.vectors)
    shard = next(k for k in store.list(f"vectors/{vectors}") if k.endswith(".parquet"))
    store.write_bytes(shard, store.read_bytes(shard)[:-5])
    for entry in (tmp_path / "cache").iterdir():  # a fresh cache: the earlier verified copy is gone
        __import__("shutil").rmtree(entry)
    assert main(["eval", s3_url, "--no-baselines"]) == 2
    assert f"{shard.rsplit('/', 1)[1]}: " in capsys.readouterr().err
