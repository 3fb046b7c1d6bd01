"""``python -m beam_jobs``: dispatch and the rollback command."""
from beam_jobs.__main__ import main
from core import lifecycle


def finished(root, version, **fields):
    vr = lifecycle.VersionedRoot(root)
    stage = vr.stage(version)
    stage.storage.write_bytes("x.bin", version.encode())
    stage.write_manifest({"version": version, **fields})
    vr.finish(stage)


def test_usage_without_a_job(capsys):
    assert main([]) == 2 and "python -m beam_jobs embed" in capsys.readouterr().err
    assert main(["upload"]) == 2


def test_rollback_command_flips_index_and_vectors(tmp_path, capsys):
    for v in ("v1", "v2"):
        finished(tmp_path / "vectors", f"vec-{v}")
        finished(tmp_path / "index", v, vectors_version=f"vec-{v}")  # the vectors the index was built from
    lifecycle.VersionedRoot(tmp_path / "vectors").publish("vec-v2")
    lifecycle.VersionedRoot(tmp_path / "index").publish("v2")
    assert main(["rollback", "--run", str(tmp_path)]) == 0
    assert lifecycle.current_version(tmp_path / "index") == "v1"
    assert lifecycle.current_version(tmp_path / "vectors") == "vec-v1"
    assert "index/current -> v1" in capsys.readouterr().out
    assert main(["rollback", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m beam_jobs rollback: error: ") and "nothing older to roll back to" in err
