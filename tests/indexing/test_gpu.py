"""GPU clone policy. CPU-only machines run the policy tests; ``@pytest.mark.gpu`` tests need faiss-gpu + a GPU."""
import faiss
import numpy as np
import pytest

from core.errors import OperationFailed
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


# -- the policy on a CPU machine, with a fake GPU ------------------------------------------------------
# ``gpu_count`` reports one device and ``_clone`` returns a ``GpuIndex`` wrapping a CPU copy of the index that
# records every search, so the k > GPU_MAX_K fallback and the nprobe / HNSW refusals run on every machine.


class FakeGpuIndex(gpu.GpuIndex):
    def __init__(self, cpu_index):
        super().__init__(faiss.clone_index(cpu_index), [], 1, False, False)
        self.searched_k = []
        self.params = {}

    def set_search_params(self, params):  # GpuParameterSpace needs faiss-gpu; the CPU ParameterSpace does the same
        self.params = dict(params)
        if "nprobe" in params:
            faiss.ParameterSpace().set_index_parameter(self.index, "nprobe", int(params["nprobe"]))

    def search(self, queries, k):
        self.searched_k.append(k)
        return super().search(queries, k)  # the real GpuIndex.search: refuses k > GPU_MAX_K


@pytest.fixture
def fake_gpu(monkeypatch):
    clones = []

    def clone(cpu_index, devices, float16, shard):
        clones.append(FakeGpuIndex(cpu_index))
        return clones[-1]

    monkeypatch.setattr(gpu, "gpu_count", lambda: 1)
    monkeypatch.setattr(gpu, "_clone", clone)
    return clones


def test_fake_gpu_searches_up_to_the_gpu_limit_and_answers_larger_k_on_the_cpu(data, fake_gpu):
    x, q, ids = data
    cpu = ItemIndex.build(x, ids, IndexSpec(factory="Flat", gpu="never", recall_queries=50), "mv")
    on_gpu = ItemIndex.build(x, ids, IndexSpec(factory="Flat", gpu="always", recall_queries=50), "mv")
    assert on_gpu.on_gpu and not cpu.on_gpu and len(fake_gpu) == 1
    clone = fake_gpu[0]
    q = q[:20]
    for k, excluded, on_the_gpu in ((10, 7, True), (gpu.GPU_MAX_K - 10, 5, True),
                                    (gpu.GPU_MAX_K + 1, 0, False),     # k itself past the limit
                                    (gpu.GPU_MAX_K - 10, 50, False)):  # k + the exclusions past the limit
        exclude = [np.arange(i, i + excluded) for i in range(len(q))]
        clone.searched_k.clear()
        (s_cpu, r_cpu), (s_gpu, r_gpu) = cpu.search(q, k, exclude), on_gpu.search(q, k, exclude)
        np.testing.assert_array_equal(r_gpu, r_cpu)
        np.testing.assert_allclose(s_gpu, s_cpu)
        assert bool(clone.searched_k) == on_the_gpu, (k, excluded, clone.searched_k)
        assert all(kk <= gpu.GPU_MAX_K for kk in clone.searched_k)
    with pytest.raises(ValueError, match=r"GPU search supports k <= 2048, got k=2049; search the CPU index"):
        clone.search(q, gpu.GPU_MAX_K + 1)


def test_fake_gpu_gets_the_search_params_and_nprobe_above_the_limit_is_refused(data, fake_gpu, caplog):
    x, q, ids = data
    index = ItemIndex.build(x[:2000], ids[:2000], IndexSpec(factory="IVF16,Flat", nprobe=4, gpu="always",
                                                            recall_queries=50), "mv")
    assert index.on_gpu and fake_gpu[-1].params == {"nprobe": 4}
    index.set_search_params(nprobe=8)
    assert fake_gpu[-1].params == {"nprobe": 8}  # a change of effort reaches the GPU copy
    # the clone policy itself: nprobe up to the limit clones, one more is refused ("always") or stays on CPU
    cpu_index = faiss.index_factory(8, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    cpu_index.train(x[:200, :8].copy())
    spec = IndexSpec(factory="IVF4,Flat", gpu="always")
    assert isinstance(gpu.maybe_to_gpu(cpu_index, spec, {"nprobe": gpu.GPU_MAX_NPROBE}), FakeGpuIndex)
    with pytest.raises(OperationFailed, match=r"gpu='always' but nprobe=2049 exceeds the GPU limit of 2048"):
        gpu.maybe_to_gpu(cpu_index, spec, {"nprobe": gpu.GPU_MAX_NPROBE + 1})
    clones = len(fake_gpu)
    with caplog.at_level("WARNING", logger="indexing.gpu"):
        assert gpu.maybe_to_gpu(cpu_index, IndexSpec(factory="IVF4,Flat", gpu="auto"),
                                {"nprobe": gpu.GPU_MAX_NPROBE + 1}) is None
    assert "nprobe=2049 exceeds the GPU limit of 2048" in caplog.text and len(fake_gpu) == clones  # no clone made
    assert gpu.maybe_to_gpu(cpu_index, IndexSpec(factory="IVF4,Flat", gpu="never"), {"nprobe": 1}) is None


def test_fake_gpu_keeps_hnsw_on_the_cpu(data, fake_gpu):
    x, _, ids = data
    assert not ItemIndex.build(x[:500], ids[:500], IndexSpec(factory="HNSW8,Flat", gpu="auto", recall_queries=20),
                               "mv").on_gpu
    with pytest.raises(OperationFailed, match="HNSW indices have no GPU implementation"):
        ItemIndex.build(x[:500], ids[:500], IndexSpec(factory="HNSW8,Flat", gpu="always", recall_queries=20), "mv")
    assert fake_gpu == []
