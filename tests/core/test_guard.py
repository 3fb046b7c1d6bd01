"""The one model-version guard (core.guard)."""
import pytest

from core.guard import ModelVersionMismatch, require_same_model


def test_same_model_passes_and_another_is_refused_naming_both_versions_both_artifacts_and_the_fix():
    require_same_model("m1", "m1", expected_from="the query tower", found_from="the index", fix="rebuild it")
    with pytest.raises(ModelVersionMismatch) as info:
        require_same_model("m1", "m2", expected_from="the query tower in runs/x/model",
                           found_from="the index runs/x/index/v3", fix="rebuild the index (`twotower rebuild`)")
    assert str(info.value) == ("the index runs/x/index/v3 was made by model version 'm2' but the query tower in "
                               "runs/x/model is model version 'm1'; their vectors are not comparable. Rebuild the "
                               "index (`twotower rebuild`)")
    assert (info.value.expected, info.value.found) == ("m1", "m2")
    assert isinstance(info.value, ValueError)  # a user-fixable refusal: one line, exit 2 through core.cli


def test_every_guard_site_uses_the_one_implementation():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(["git", "grep", "-l", "require_same_model(", "--", "*.py", ":!tests"], cwd=root,
                         capture_output=True, text=True).stdout.split()
    assert set(out) >= {"towers/export.py", "beam_jobs/handler.py", "beam_jobs/embed_items.py", "indexing/vectors.py",
                        "indexing/gate.py", "twotower/pipeline.py", "serving/state.py", "core/lifecycle.py"}
    defined = subprocess.run(["git", "grep", "-n", "class .*Mismatch(", "--", "*.py", ":!tests"], cwd=root,
                             capture_output=True, text=True).stdout.splitlines()
    assert [line.split(":")[0] for line in defined] == ["core/guard.py"]
