"""save / load / publish of ItemIndex artifacts, including corruption and truncation."""
import json

import numpy as np
import pytest

from indexing.item_index import ItemIndex
from indexing.spec import IndexSpec
from indexing.store import IDS_FILE, INDEX_FILE, load_current, load_index, publish_index, save_index
from indexing.synthetic import clustered_vectors
from core import artifacts
from core import lifecycle


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def data():
    x, q = clustered_vectors(3000, 16, 50, seed=9)
    return x, q, [f"sku-{i}" for i in range(len(x))]


def build(data, factory, **kw):
    x, _, ids = data
    return ItemIndex.build(x, ids, IndexSpec(factory=factory, gpu="never", recall_queries=100, **kw), "model-42")


@pytest.mark.parametrize("factory,params", [("Flat", {}), ("IVF32,Flat", {"nprobe": 4}),
                                            ("HNSW16,Flat", {"ef_search": 40})])
def test_save_load_gives_identical_results_and_manifest(tmp_path, data, factory, params):
    x, q, ids = data
    index = build(data, factory, **params)
    manifest = save_index(index, tmp_path / "v1", {"vectors_version": "vec-7"})
    loaded = load_index(tmp_path / "v1")
    exclude = [np.arange(i, i + 3) for i in range(len(q))]
    for a, b in zip(index.search(q, 25, exclude), loaded.search(q, 25, exclude)):
        np.testing.assert_array_equal(a, b)
    assert loaded.item_ids.tolist() == ids
    assert (loaded.factory, loaded.model_version, loaded.dim, loaded.ntotal) == (factory, "model-42", 16, 3000)
    assert loaded.search_params == index.search_params and loaded.recall == index.recall
    on_disk = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk["kind"] == "item_index" and on_disk["metric"] == "ip" and on_disk["vectors_version"] == "vec-7"
    assert 0.0 < on_disk["recall"]["recall"] <= 1.0 and on_disk["recall"]["k"] == 100
    assert set(on_disk["files"]) == {INDEX_FILE, IDS_FILE}


@pytest.mark.parametrize("name", [INDEX_FILE, IDS_FILE])
def test_flipped_byte_is_refused(tmp_path, data, name):
    save_index(build(data, "Flat"), tmp_path / "v1")
    path = tmp_path / "v1" / name
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=rf"{name}: sha256 .* does not match the manifest"):
        load_index(tmp_path / "v1")


def test_truncated_file_is_refused(tmp_path, data):
    save_index(build(data, "IVF32,Flat"), tmp_path / "v1")
    path = tmp_path / "v1" / INDEX_FILE
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size - 100])
    with pytest.raises(ValueError, match=rf"{INDEX_FILE}: size {size - 100} bytes, manifest says {size}"):
        load_index(tmp_path / "v1")


def test_missing_manifest_and_wrong_kind_are_refused(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="not a finished artifact"):
        load_index(tmp_path / "nothing")
    (tmp_path / "vec").mkdir()
    artifacts.write_manifest(tmp_path / "vec", {"kind": "item_vectors"})
    with pytest.raises(ValueError, match="holds a 'item_vectors' artifact, not an item index"):
        load_index(tmp_path / "vec")


def test_save_requires_measured_recall_and_an_empty_directory(tmp_path, data):
    index = build(data, "IVF32,Flat")
    index.set_search_params(nprobe=8)
    with pytest.raises(ValueError, match="no measured recall.*measure_recall"):
        save_index(index, tmp_path / "v1")
    index.measure_recall(data[0])
    save_index(index, tmp_path / "v1")
    with pytest.raises(FileExistsError, match="immutable"):
        save_index(index, tmp_path / "v1")
    with pytest.raises(ValueError, match=r"may not override \['recall'\]"):
        save_index(index, tmp_path / "v2", {"recall": 1.0})


def test_load_with_overrides_changes_serving_params_and_drops_stale_recall(tmp_path, data):
    save_index(build(data, "IVF32,Flat", nprobe=2), tmp_path / "v1")
    loaded = load_index(tmp_path / "v1", {"nprobe": 32})
    assert loaded.search_params == {"nprobe": 32} and loaded.recall is None
    with pytest.raises(ValueError, match=r"may only change how the index is served .* not \['bogus', 'factory'\]"):
        load_index(tmp_path / "v1", {"bogus": 1, "factory": "Flat"})
    with pytest.raises(ValueError, match="nprobe must be a positive int"):
        load_index(tmp_path / "v1", {"nprobe": 0})


def test_publish_flips_current_and_prunes_old_versions(tmp_path, data):
    root = tmp_path / "index"
    flat, ivf = build(data, "Flat"), build(data, "IVF32,Flat")
    for version, index in [("v1", flat), ("v2", ivf), ("v3", flat)]:
        path = publish_index(root, index, version, keep=2)
        assert path == root / version
        assert lifecycle.current_version(root) == version
    assert lifecycle.list_versions(root) == ["v2", "v3"]
    assert not [p for p in root.iterdir() if p.name.startswith(".staging")]
    current = load_current(root)
    assert current.factory == "Flat"
    assert json.loads((root / "v3" / "manifest.json").read_text())["version"] == "v3"
    with pytest.raises(FileExistsError, match="immutable"):
        publish_index(root, flat, "v3")
    assert publish_index(root, flat).name.startswith("000001-")  # a fresh sequenced name sorts after v3
    assert lifecycle.list_versions(root)[-1] == lifecycle.current_version(root)


def test_failed_publish_leaves_current_and_no_staging(tmp_path, data):
    root = tmp_path / "index"
    publish_index(root, build(data, "Flat"), "v1")
    broken = build(data, "IVF32,Flat")
    broken.recall = None
    with pytest.raises(ValueError, match="no measured recall"):
        publish_index(root, broken, "v2")
    assert lifecycle.current_version(root) == "v1"
    assert sorted(p.name for p in root.iterdir()) == [".lease", "current", "v1"]  # v2 and its marker removed
    assert json.loads((root / ".lease").read_text())["released"]
    with pytest.raises(FileNotFoundError, match="nothing has been published"):
        load_current(tmp_path / "empty")
