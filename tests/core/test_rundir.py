"""core.rundir: the run directory at a local path or a URL (s3://, gs://)."""
from pathlib import Path

import pytest

from core.rundir import RunDir, UrlPath
from core.storage import open_storage


def test_a_local_run_directory_is_made_of_paths(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    assert run.root == tmp_path / "r" and not run.remote
    assert run.item_tower == tmp_path / "r" / "model" / "item_tower" and isinstance(run.index, Path)
    with pytest.raises(FileNotFoundError, match=r"model_version is missing: .* has no exported model"):
        run.model_version()


def test_a_run_directory_on_s3_reads_through_storage(s3_url):
    run = RunDir(s3_url + "/run/")
    assert run.remote and isinstance(run.root, UrlPath) and str(run.root) == s3_url + "/run"
    assert str(run.query_tower) == s3_url + "/run/model/query_tower" and run.query_tower.name == "query_tower"
    assert run.index.parent == run.root and str(run.data / "items.parquet") == s3_url + "/run/data/items.parquet"
    assert not run.model_version_file.is_file() and not run.model.exists()
    with pytest.raises(FileNotFoundError, match=rf"{s3_url}/run/model/model_version is missing"):
        run.model_version()
    run.storage().write_bytes("model/model_version", b"m-7\n")
    assert run.model_version() == "m-7" and run.model.exists() and run.model.is_dir()
    assert run.model_version_file.is_file() and not run.model.is_file()
    assert open_storage(str(run.model)).read_bytes("model_version") == b"m-7\n"
    assert run.require(run.model, "train first") == run.model
    with pytest.raises(FileNotFoundError, match=r"/run/index does not exist; publish one"):
        run.require(run.index, "publish one")


def test_a_url_is_never_taken_for_a_local_path():
    root = UrlPath("gs://bucket/runs/x")
    with pytest.raises(TypeError):
        Path(root)  # no __fspath__: local-only code fails at once instead of writing a local "gs:" directory
    with pytest.raises(ValueError, match=r"UrlPath needs a URL with a scheme"):
        UrlPath("runs/x")
    assert UrlPath("s3://b").name == "" and (UrlPath("s3://b") / "k").url == "s3://b/k"
    assert hash(UrlPath("s3://b/k/")) == hash(UrlPath("s3://b/k"))
    for url in ("s3:///runs/x", "gs://", "s3://"):  # "s3:///runs/x" was read as bucket "runs"
        with pytest.raises(ValueError, match=f"{url!r} names no bucket; write .*://<bucket>/<prefix>"):
            UrlPath(url)
