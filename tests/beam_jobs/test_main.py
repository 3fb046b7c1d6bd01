"""``python -m beam_jobs``: dispatch and the rollback command."""
from beam_jobs.__main__ import main
from core import artifacts


def finished(root, version, **fields):
    stage = artifacts.staging_dir(root, version)
    (stage / "x.bin").write_bytes(version.encode())
    artifacts.write_manifest(stage, {"version": version, **fields})
    artifacts.promote(stage, root, version)


def test_usage_without_a_job(capsys):
    assert main([]) == 2 and "python -m beam_jobs embed" in capsys.readouterr().err
    assert main(["upload"]) == 2


def test_rollback_command_flips_index_and_vectors(tmp_path, capsys):
    for v in ("v1", "v2"):
        finished(tmp_path / "vectors", f"vec-{v}")
        finished(tmp_path / "index", v, vectors_version=f"vec-{v}")  # the vectors the index was built from
    artifacts.publish(tmp_path / "vectors", "vec-v2")
    artifacts.publish(tmp_path / "index", "v2")
    assert main(["rollback", "--run", str(tmp_path)]) == 0
    assert artifacts.current_version(tmp_path / "index") == "v1"
    assert artifacts.current_version(tmp_path / "vectors") == "vec-v1"
    assert "index/current -> v1" in capsys.readouterr().out
    assert main(["rollback", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m beam_jobs rollback: error: ") and "nothing older to roll back to" in err
