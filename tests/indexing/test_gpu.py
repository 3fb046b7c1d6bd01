"""GPU clone policy. CPU-only machines run the policy tests; ``@pytest.mark.gpu`` tests need faiss-gpu + a GPU."""
import faiss
import numpy as np
import pytest

from indexing import gpu
from indexing.item_index import ItemIndex
from indexing.recall import recall_against_exact
from indexing.spec import IndexSpec
from indexing.synthetic import clustered_vectors

needs_gpu = pytest.mark.skipif(gpu.gpu_count() == 0, reason="no GPU visible to FAISS (faiss-cpu build or no device)")


@pytest.fixture(scope="module")
def data():
    x, q = clustered_vectors(5000, 32, 64, seed=21)
    return x, q, [f"i{i}" for i in range(len(x))]


@pytest.mark.skipif(gpu.gpu_count() > 0, reason="checks the CPU-only behaviour")
def test_cpu_build_auto_stays_on_cpu_and_always_refuses(data):
    x, _, ids = data
    assert not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0
    assert not ItemIndex.build(x, ids, IndexSpec(factory="Flat", gpu="auto"), "mv").on_gpu
    with pytest.raises(RuntimeError, match="gpu='always' but FAISS sees no GPU"):
        ItemIndex.build(x, ids, IndexSpec(factory="Flat", gpu="always"), "mv")


@pytest.mark.gpu
@needs_gpu
def test_gpu_flat_matches_cpu_flat_including_k_above_the_gpu_limit(data):
    x, q, ids = data
    cpu = ItemIndex.build(x, ids, IndexSpec(factory="Flat", gpu="never"), "mv")
    on_gpu = ItemIndex.build(x, ids, IndexSpec(factory="Flat", gpu="always"), "mv")
    assert on_gpu.on_gpu
    for k in (10, gpu.GPU_MAX_K + 1):  # the second runs on the CPU copy
        exclude = [np.arange(i, i + 7) for i in range(len(q))]
        (s_cpu, r_cpu), (s_gpu, r_gpu) = cpu.search(q, k, exclude), on_gpu.search(q, k, exclude)
        np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-4)
        assert (r_gpu == r_cpu).mean() > 0.99  # GPU float ordering may swap near-ties


@pytest.mark.gpu
@needs_gpu
def test_gpu_ivf_float16_recall_and_hnsw_falls_back(data):
    x, q, ids = data
    spec = IndexSpec(factory="IVF64,Flat", nprobe=16, gpu="always", gpu_float16=True, recall_k=10)
    index = ItemIndex.build(x, ids, spec, "mv")
    assert index.on_gpu and recall_against_exact(index, x, q, 10) >= 0.9
    assert not ItemIndex.build(x, ids, IndexSpec(factory="HNSW16,Flat", gpu="auto"), "mv").on_gpu
    with pytest.raises(RuntimeError, match="HNSW"):
        ItemIndex.build(x, ids, IndexSpec(factory="HNSW16,Flat", gpu="always"), "mv")
