import json
import os

import pytest

from core import artifacts as A


def _finished(root, version, payload=b"abc"):
    directory = root / version
    directory.mkdir(parents=True)
    (directory / "data.bin").write_bytes(payload)
    A.write_manifest(directory, {"version": version, "count": 3})
    return directory


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "x.json"
    A.atomic_write_json(p, {"a": 1})
    A.atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["x.json"]


def test_failed_write_keeps_old_content(tmp_path):
    p = tmp_path / "x.json"
    A.atomic_write_json(p, {"a": 1})
    with pytest.raises(TypeError):
        A.atomic_write_json(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["x.json"]


def test_manifest_save_load_verify(tmp_path):
    d = _finished(tmp_path, "v1")
    m = A.verify_manifest(d)
    assert m["count"] == 3 and m["files"]["data.bin"]["bytes"] == 3
    assert m["files"]["data.bin"]["sha256"] == A.sha256_file(d / "data.bin")


def test_verify_refuses_flipped_byte_and_truncation(tmp_path):
    d = _finished(tmp_path, "v1", b"hello world")
    (d / "data.bin").write_bytes(b"hellO world")
    with pytest.raises(ValueError, match="sha256 .* does not match the manifest"):
        A.verify_manifest(d)
    (d / "data.bin").write_bytes(b"hello")
    with pytest.raises(ValueError, match="size 5 bytes, manifest says 11"):
        A.verify_manifest(d)
    os.unlink(d / "data.bin")
    with pytest.raises(ValueError, match="listed in the manifest but missing"):
        A.verify_manifest(d)


def test_a_directory_without_its_manifest_is_unfinished(tmp_path):
    (tmp_path / "v9").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a finished artifact"):
        A.read_manifest(tmp_path / "v9")


def test_written_files_follow_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        p = A.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)
