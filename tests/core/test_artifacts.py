import json
import os

import pytest

from core import artifacts as A


def _finished(root, version, payload=b"abc"):
    stage = A.staging_dir(root, version)
    (stage / "data.bin").write_bytes(payload)
    A.write_manifest(stage, {"version": version, "count": 3})
    return A.promote(stage, root, version)


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


def test_publish_current_and_prune(tmp_path):
    for v in ("v1", "v2", "v3"):
        _finished(tmp_path, v)
        A.publish(tmp_path, v)
    assert A.current_version(tmp_path) == "v3"
    A.publish(tmp_path, "v1")  # rollback
    assert A.current_dir(tmp_path) == tmp_path / "v1"
    removed = A.prune(tmp_path, keep=1)
    assert removed == ["v2"]  # v1 is current, so it is kept
    assert A.list_versions(tmp_path) == ["v1", "v3"]


def test_unfinished_staging_is_never_a_version(tmp_path):
    stage = A.staging_dir(tmp_path, "v9")
    (stage / "data.bin").write_bytes(b"x")
    assert A.list_versions(tmp_path) == []
    with pytest.raises(ValueError, match="refusing to promote an unfinished artifact"):
        A.promote(stage, tmp_path, "v9")
    with pytest.raises(FileNotFoundError, match="is not a finished artifact"):
        A.publish(tmp_path, "v9")
    assert A.current_version(tmp_path) is None


def test_versions_are_immutable(tmp_path):
    _finished(tmp_path, "v1")
    stage = A.staging_dir(tmp_path, "v1")
    A.write_manifest(stage, {})
    with pytest.raises(FileExistsError, match="versions are immutable"):
        A.promote(stage, tmp_path, "v1")


def test_written_files_and_versions_follow_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        p = A.atomic_write_text(tmp_path / "a.txt", "x")
        d = _finished(tmp_path, "v1")
    finally:
        os.umask(old)
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)
    assert oct(d.stat().st_mode & 0o777) == oct(0o755)
