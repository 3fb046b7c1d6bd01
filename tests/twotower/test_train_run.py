"""`twotower train --run s3://...` (twotower/train_run.py): trained in a local staging directory, uploaded
through core.storage with model/manifest.json last; then rebuild and eval answer from the run on the store.
Against the real SeaweedFS server (`s3_server`) and fake-gcs-server (`gcs_server`)."""
from __future__ import annotations

import json

import pytest

from core import artifacts
from core.lifecycle import parse_pointer
from core.rundir import RunDir
from core.storage import open_storage, upload_directory
from core.version_cache import cached_directory
from twotower import train_run as T
from twotower.cli import main

from tests.twotower.test_rebuild_on_object_storage import TINY, _sets

FAST = [s for s in TINY if not s.startswith(("data.synthetic.num_items", "index."))] + [
    "data.synthetic.num_items=300", "train.keep_checkpoints=1", "index.factory=Flat", "index.recall_queries=50",
    "eval.bootstrap_samples=20", "eval.ks=[10]", "eval.baselines=[]"]


def _train(run, *more, overwrite=False):
    try:
        return main(["train", "--config", "demo", "--run", str(run), *_sets(FAST + list(more)),
                     *(["--overwrite"] if overwrite else [])])
    except SystemExit as exc:  # argparse refuses a malformed --run itself
        return exc.code


@pytest.mark.slow
def test_train_into_s3_then_rebuild_and_eval_answer_from_the_bucket(s3_server, s3_url, tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("TWOTOWER_CACHE", str(tmp_path / "cache"))
    store = open_storage(s3_url)
    run = RunDir(s3_url)

    # a train killed after its first epoch (here: just before the upload) leaves its config and checkpoint
    # on the store, and no run that looks trained
    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "upload_run", killed)
    assert _train(s3_url) == 130
    monkeypatch.undo()
    monkeypatch.setenv("TWOTOWER_CACHE", str(tmp_path / "cache"))
    keys = store.list()
    assert {"config.yaml", "train/checkpoints/checkpoint", "train/checkpoints/ckpt-1.index"} <= set(keys)
    assert not [k for k in keys if k.startswith(("model/", "data/"))] and T.trained_model_version(run) is None
    assert json.loads(store.read_bytes(".lease"))["released"]
    assert "num_items: 300" in store.read_bytes("config.yaml").decode()  # the resolved config, exactly what ran
    capsys.readouterr()

    # resumed with the run's saved config: the remote checkpoint is downloaded, training continues after epoch 1
    assert main(["train", "--run", s3_url, "--set", "train.epochs=2", "--set", "train.resume=true"]) == 0
    out = capsys.readouterr().out
    assert f"resuming from {s3_url}/train/checkpoints/ckpt-1" in out and "trained 1 epochs (resumed after epoch 1)" in out
    model = json.loads(store.read_bytes("model/manifest.json"))
    version = model["model_version"]
    assert f"model version {version} → {s3_url}/model" in out and run.model_version() == version
    keys = store.list()
    assert "data/manifest.json" in keys and json.loads(store.read_bytes("train/summary.json"))["resumed_from_epoch"] == 1
    assert set(model["files"]) == {k[len("model/"):] for k in keys if k.startswith("model/") and
                                   not k.endswith("manifest.json")}
    assert {k for k in keys if k.startswith("train/checkpoints/")} == {  # the manager keeps one: ckpt-1 is gone
        "train/checkpoints/checkpoint", "train/checkpoints/ckpt-2.index",
        *[k for k in keys if k.startswith("train/checkpoints/ckpt-2.data-")]}
    assert "epochs: 2" in store.read_bytes("config.yaml").decode()
    assert not list((tmp_path / "cache" / "staging").iterdir())  # the local staging directories are gone

    # a trained run is refused without --overwrite, and nothing on the store changes
    assert _train(s3_url) == 2
    err = capsys.readouterr().err
    assert f"twotower train: error: {s3_url} already holds a trained model (model version {version}" in err
    assert "pass --overwrite" in err and json.loads(store.read_bytes("model/manifest.json")) == model

    # the whole flow on the bucket: rebuild (embed + index, DirectRunner), then eval answers from it
    assert main(["rebuild", "--run", s3_url, "--runner", "DirectRunner"]) == 0
    index_version = parse_pointer(store.read_bytes("index/current"))
    assert json.loads(store.read_bytes(f"index/{index_version}/manifest.json"))["model_version"] == version
    capsys.readouterr()
    assert main(["eval", s3_url, "--no-baselines"]) == 0
    out = capsys.readouterr().out
    assert "| tiny | exact |" in out and "| tiny | index |" in out and store.exists("eval/tiny/metrics.json")

    # a truncated model object on the store is refused by its manifest before TensorFlow reads it (eval, serve
    # and the Beam workers all read the model through this verified cache)
    variables = next(k for k in store.list("model/query_tower/variables") if ".data-" in k)
    whole = store.read_bytes(variables)
    store.write_bytes(variables, whole[:-7])
    with pytest.raises(ValueError, match=f"{s3_url}/{variables}: {len(whole) - 7} bytes, the manifest says "
                                         f"{len(whole)}; the object is truncated"):
        cached_directory(f"{s3_url}/model", tmp_path / "fresh-cache")
    assert not list((tmp_path / "fresh-cache").rglob("variables.data-*"))  # nothing half-verified is kept


@pytest.mark.slow
def test_train_into_gcs_uploads_a_run_that_reads_back_verified(gcs_server, gcs_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWOTOWER_CACHE", str(tmp_path / "cache"))
    assert _train(gcs_url, "train.keep_checkpoints=0") == 0
    store = open_storage(gcs_url)
    model = cached_directory(f"{gcs_url}/model")  # downloaded, every file's size + sha256 checked
    assert artifacts.verify_manifest(model)["model_version"] == RunDir(gcs_url).model_version()
    assert artifacts.verify_manifest(cached_directory(f"{gcs_url}/data"))["kind"] == "data_split"
    assert store.exists("config.yaml") and not store.list("train/checkpoints")


@pytest.mark.parametrize("url, message", [
    ("ftp://host/runs/x", "no storage backend for 'ftp://host/runs/x' (scheme 'ftp'); supported: "),
    ("s3:///runs/x", "names no bucket"),
    ("s3://no-such-bucket-here/runs/x", "bucket 'no-such-bucket-here' does not exist at "),
])
def test_bad_run_urls_are_refused_before_anything_is_trained(s3_server, tmp_path, monkeypatch, capsys, url, message):
    monkeypatch.setenv("TWOTOWER_CACHE", str(tmp_path / "cache"))
    assert _train(url) == 2
    err = capsys.readouterr().err
    assert err.startswith("twotower train: error: ") and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "cache" / "staging").exists()  # refused before staging, loading or training


def test_a_local_run_that_is_trained_is_refused_without_overwrite(tmp_path, capsys):
    run = RunDir(tmp_path / "r")
    run.model.mkdir(parents=True)
    (run.model / "model_version").write_text("v1\n")
    artifacts.write_manifest(run.model, {"model_version": "v1"})
    assert _train(run.root) == 2
    err = capsys.readouterr().err
    assert f"{run.root} already holds a trained model (model version v1, {run.model}/manifest.json); pass " \
           "--overwrite" in err
    assert not run.config.exists()


class _Recording:
    """A storage that records each written key and can fail at a chosen write (a killed upload)."""

    def __init__(self, inner, fail_at: str | None = None):
        self.inner, self.fail_at, self.written = inner, fail_at, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _record(self, key):
        if key == self.fail_at:
            raise KeyboardInterrupt(f"killed while writing {key}")
        self.written.append(key)

    def write_bytes(self, key, data):
        self._record(key)
        self.inner.write_bytes(key, data)

    def open_write(self, key):
        self._record(key)
        return self.inner.open_write(key)

    def delete(self, key):
        self._record(f"del:{key}")
        self.inner.delete(key)

    def delete_prefix(self, prefix):
        for key in self.inner.list(prefix):
            self.delete(key)


def _staged_run(root):
    for rel, text in {"config.yaml": "name: x\n", "data/train.parquet": "d" * 10, "train/summary.json": "{}",
                      "train/checkpoints/ckpt-1.index": "i", "train/checkpoints/ckpt-1.data-00000-of-00001": "c",
                      "train/checkpoints/checkpoint": 'model_checkpoint_path: "ckpt-1"\n'
                                                      'all_model_checkpoint_paths: "ckpt-1"\n',
                      "model/item_tower/saved_model.pb": "i" * 20, "model/query_tower/saved_model.pb": "q" * 20, "model/model_version": "v2\n"}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    artifacts.write_manifest(root / "data", {"kind": "data_split"})
    artifacts.write_manifest(root / "model", {"model_version": "v2"})
    return root


def test_upload_writes_every_manifest_after_its_files_and_the_model_manifest_last(s3_server, s3_url, tmp_path):
    staged = _staged_run(tmp_path / "staged")
    store = _Recording(open_storage(s3_url))
    T.upload_run(staged, store)
    written = [k for k in store.written if not k.startswith("del:")]
    assert written[-1] == "model/manifest.json" and written[0] == "config.yaml"
    position = {k: i for i, k in enumerate(written)}
    assert all(position[k] < position["data/manifest.json"] for k in position if k.startswith("data/") and k != "data/manifest.json")
    assert position["train/checkpoints/checkpoint"] > position["train/checkpoints/ckpt-1.index"]
    assert cached_directory(f"{s3_url}/model", tmp_path / "c").joinpath("model_version").read_text() == "v2\n"


@pytest.mark.parametrize("killed_at", ["del:model/item_tower/saved_model.pb", "data/manifest.json",
                                       "model/query_tower/saved_model.pb", "model/manifest.json"])
def test_a_killed_upload_over_a_trained_run_leaves_a_run_that_does_not_look_trained(s3_server, s3_url, tmp_path,
                                                                                   killed_at, capsys):
    old = _staged_run(tmp_path / "old")
    T.upload_run(old, open_storage(s3_url))
    assert T.trained_model_version(RunDir(s3_url)) == "v2"
    new = _staged_run(tmp_path / "new")
    (new / "model" / "model_version").write_text("v3\n")
    artifacts.write_manifest(new / "model", {"model_version": "v3"})
    with pytest.raises(KeyboardInterrupt):
        T.upload_run(new, _Recording(open_storage(s3_url), fail_at=killed_at))
    assert T.trained_model_version(RunDir(s3_url)) is None  # neither the old model nor a half new one
    assert main(["rebuild", "--run", s3_url]) == 2
    assert f"{s3_url}/model/manifest.json is missing" in capsys.readouterr().err


def test_checkpoints_mirror_the_state_file_last_and_download_for_resume(s3_server, s3_url, tmp_path):
    local = tmp_path / "ckpt"
    local.mkdir()
    store = _Recording(open_storage(s3_url))
    (local / "ckpt-1.index").write_text("a")
    (local / "ckpt-1.data-00000-of-00001").write_text("b")
    (local / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    uploaded = T.sync_checkpoints(local, store)
    assert store.written[-1] == "train/checkpoints/checkpoint" and len(store.written) == 3, store.written
    for name in ("ckpt-1.index", "ckpt-1.data-00000-of-00001"):  # the manager keeps one: ckpt-1 goes
        (local / name).unlink()
    (local / "ckpt-2.index").write_text("c")
    (local / "ckpt-2.data-00000-of-00001").write_text("d")
    (local / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n')
    T.sync_checkpoints(local, store, uploaded=uploaded)
    assert store.list("train/checkpoints") == ["train/checkpoints/checkpoint", "train/checkpoints/ckpt-2.data-00000-of-00001",
                                               "train/checkpoints/ckpt-2.index"]
    store.write_bytes("train/checkpoints/ckpt-3.index", b"unnamed: a killed upload's leftover")
    restored = tmp_path / "restored"
    assert T.download_checkpoints(store, restored) == "ckpt-2"
    assert sorted(p.name for p in restored.iterdir()) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert (restored / "ckpt-2.index").read_text() == "c"
    assert T.download_checkpoints(open_storage(f"{s3_url}/elsewhere"), tmp_path / "none") is None


def test_upload_directory_refuses_a_file_that_is_not_a_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a directory; nothing to upload to"):
        upload_directory(tmp_path / "f", open_storage(tmp_path / "dest"))


def test_a_missing_gcs_bucket_is_refused_before_anything_is_trained(gcs_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWOTOWER_CACHE", str(tmp_path / "cache"))
    assert _train("gs://no-such-bucket-here/runs/x") == 2
    err = capsys.readouterr().err
    assert err.startswith("twotower train: error: ") and len(err.splitlines()) == 1, err
    assert "no-such-bucket-here" in err and "does not exist" in err, err
    assert not (tmp_path / "cache" / "staging").exists()
