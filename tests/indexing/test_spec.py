"""IndexSpec validation and the 'auto' factory rule."""
import math

import pytest

from indexing.spec import (FLAT_MAX_ITEMS, IndexSpec, choose_factory, choose_nlist, choose_pq_m, default_nprobe,
                           factory_nlist, is_hnsw_factory)
from core.strict import from_dict, to_dict


def test_small_catalogues_get_exact_flat():
    assert choose_factory(1, 64) == "Flat"
    assert choose_factory(FLAT_MAX_ITEMS, 64) == "Flat"


def test_middle_gets_ivf_flat_with_nlist_about_4_sqrt_n():
    factory = choose_factory(1_000_000, 64, 8 * 2**30)
    assert factory == "IVF4096,Flat"
    assert choose_factory(FLAT_MAX_ITEMS + 1, 64).endswith(",Flat")
    for n in (200_000, 1_000_000, 10_000_000):
        nlist = choose_nlist(n)
        assert nlist & (nlist - 1) == 0  # power of two
        assert 0.5 <= nlist / (4 * math.sqrt(n)) <= 2


def test_nlist_is_clamped():
    assert choose_nlist(10**12) == 65_536
    assert choose_nlist(2_000) == 2_000 // 39  # at least 39 training points per list
    assert choose_nlist(10) == 1


def test_flat_that_does_not_fit_the_budget_goes_ivf_then_pq():
    # 50k x 64 floats = 12.8 MB: over a 12 MB budget even though n is small; IVF-Flat needs more still
    assert choose_factory(50_000, 64, 12 * 10**6).startswith(f"IVF{choose_nlist(50_000)},PQ")
    factory = choose_factory(100_000_000, 64, 4 * 2**30)
    nlist, m = factory_nlist(factory), int(factory.split("PQ")[1])
    assert factory.startswith(f"IVF{nlist},PQ") and 64 % m == 0
    assert 100_000_000 * (m + 8) <= 4 * 2**30  # codes + ids fit
    assert choose_pq_m(96, 1000, 10**9) == 48  # largest divisor with >= 2 dims per sub-vector
    with pytest.raises(ValueError, match="do not fit a memory budget of 1000 bytes.*raise IndexSpec.memory_budget"):
        choose_factory(10**6, 64, 1000)


def test_factory_string_overrides_auto():
    assert IndexSpec(factory="HNSW32,Flat").resolve_factory(10, 8) == "HNSW32,Flat"
    assert IndexSpec().resolve_factory(10, 8) == "Flat"
    assert is_hnsw_factory("HNSW32,Flat") and not is_hnsw_factory("IVF4096_HNSW32,Flat")
    assert factory_nlist("IVF4096_HNSW32,Flat") == 4096 and factory_nlist("Flat") is None
    assert (default_nprobe(4096), default_nprobe(1024), default_nprobe(16), default_nprobe(1)) == (32, 16, 2, 1)


def test_validation_messages():
    with pytest.raises(ValueError, match="metric='l2' is not supported; only 'ip'"):
        IndexSpec(metric="l2")
    with pytest.raises(ValueError, match="gpu must be 'auto', 'never' or 'always', got 'yes'"):
        IndexSpec(gpu="yes")
    with pytest.raises(ValueError, match="nprobe must be a positive int or None"):
        IndexSpec(nprobe=0)
    with pytest.raises(ValueError, match="train_size must be a positive int"):
        IndexSpec(train_size=0)
    with pytest.raises(ValueError, match="factory must be 'auto' or a FAISS factory string"):
        IndexSpec(factory="")
    with pytest.raises(ValueError, match="n_items must be a positive int"):
        choose_factory(0, 8)


def test_from_dict_round_trip_and_unknown_keys():
    spec = from_dict(IndexSpec, {"factory": "IVF1024,Flat", "nprobe": 16, "gpu": "never"})
    assert from_dict(IndexSpec, to_dict(spec)) == spec
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['nprobes'\]"):
        from_dict(IndexSpec, {"nprobes": 16})
