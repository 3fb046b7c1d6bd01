"""Optional GPU copy of an item index (faiss-gpu builds only).

Policy (``IndexSpec.gpu``):
  "never"   CPU only.
  "auto"    clone to the GPU(s) when this FAISS build has GPU support, ``faiss.get_num_gpus() > 0`` and the
            index type has a GPU implementation (Flat, IVF-Flat, IVF-PQ, IVF-SQ); otherwise stay on CPU and
            log why. HNSW has no GPU implementation in stock faiss-gpu, so HNSW always stays on CPU.
  "always"  as "auto", but raise ``RuntimeError`` instead of falling back.

One GPU: ``index_cpu_to_gpu`` with ``GpuClonerOptions``; several: ``index_cpu_to_all_gpus`` with
``GpuMultipleClonerOptions`` (``gpu_shard`` = split the items across GPUs instead of replicating them).
``gpu_float16`` stores Flat vectors / IVF lists as float16 (half the memory, ~1e-3 score error).

FAISS GPU k-selection supports k <= ``GPU_MAX_K`` (2048), and nprobe <= 2048 likewise. Chosen behaviour:
``ItemIndex`` keeps its CPU index and answers any search needing more than 2048 candidates (k plus the
query's exclusions, or a widened retry) on the CPU, so every k works, just slower past the limit; it never
silently truncates. nprobe above 2048 is refused when cloning.

Nothing here touches a GPU-only symbol unless ``gpu_count() > 0``: faiss-cpu builds lack
``StandardGpuResources`` and friends.
"""
from __future__ import annotations

import logging

import faiss

from core.errors import OperationFailed
from indexing.spec import IndexSpec

log = logging.getLogger(__name__)

GPU_MAX_K = 2048
GPU_MAX_NPROBE = 2048


def gpu_count() -> int:
    """GPUs FAISS can use: 0 on faiss-cpu builds or machines without a visible device."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


def _unsupported_reason(cpu_index: faiss.Index) -> str | None:
    index = faiss.downcast_index(cpu_index)
    if hasattr(index, "hnsw"):
        return "HNSW indices have no GPU implementation in faiss-gpu; searching on CPU"
    return None


class GpuIndex:
    """A GPU clone of a CPU index plus the resources that must outlive it."""

    def __init__(self, index: faiss.Index, resources: list, devices: int, float16: bool, sharded: bool):
        self.index = index
        self._resources = resources  # keep StandardGpuResources alive as long as the clone
        self.devices = devices
        self.float16 = float16
        self.sharded = sharded

    def set_search_params(self, params: dict) -> None:
        """Apply {"nprobe": int} (the values the CPU index uses) through GpuParameterSpace."""
        space = faiss.GpuParameterSpace()
        if "nprobe" in params:
            space.set_index_parameter(self.index, "nprobe", int(params["nprobe"]))

    def search(self, queries, k: int):
        if k > GPU_MAX_K:
            raise ValueError(f"GPU search supports k <= {GPU_MAX_K}, got k={k}; search the CPU index instead")
        return self.index.search(queries, k)

    def describe(self) -> dict:
        return {"devices": self.devices, "float16": self.float16, "sharded": self.sharded}


def maybe_to_gpu(cpu_index: faiss.Index, spec: IndexSpec, search_params: dict) -> GpuIndex | None:
    """The GPU clone ``spec.gpu`` asks for, or None to stay on CPU (see the module docstring)."""
    if spec.gpu == "never":
        return None
    devices = gpu_count()
    if devices == 0:
        if spec.gpu == "always":
            raise OperationFailed(
                "IndexSpec.gpu='always' but FAISS sees no GPU (this is a faiss-cpu build or no CUDA device is "
                "visible); install requirements-gpu.txt on a GPU machine, or set gpu='auto' to fall back to CPU"
            )
        return None
    reason = _unsupported_reason(cpu_index)
    if reason is None and search_params.get("nprobe", 0) > GPU_MAX_NPROBE:
        reason = f"nprobe={search_params['nprobe']} exceeds the GPU limit of {GPU_MAX_NPROBE}"
    if reason is None:
        try:
            clone = _clone(cpu_index, devices, spec.gpu_float16, spec.gpu_shard)
        except RuntimeError as exc:  # FAISS throws for index types without a GPU implementation
            reason = f"FAISS could not clone this index to the GPU: {str(exc).strip().splitlines()[-1]}"
        else:
            clone.set_search_params(search_params)
            return clone
    if spec.gpu == "always":
        raise OperationFailed(f"IndexSpec.gpu='always' but {reason}; use gpu='auto' or an IVF/Flat factory")
    log.warning("%s", reason)
    return None


def _clone(cpu_index: faiss.Index, devices: int, float16: bool, shard: bool) -> GpuIndex:
    if devices == 1:
        resources = faiss.StandardGpuResources()
        options = faiss.GpuClonerOptions()
        options.useFloat16 = float16
        index = faiss.index_cpu_to_gpu(resources, 0, cpu_index, options)
        return GpuIndex(index, [resources], 1, float16, False)
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = float16
    options.shard = shard
    index = faiss.index_cpu_to_all_gpus(cpu_index, co=options)  # holds its own resources
    return GpuIndex(index, [], devices, float16, shard)
