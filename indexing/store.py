"""Saving, loading and publishing ``ItemIndex`` artifacts.

    <index_root>/<version>/index.faiss        faiss.serialize_index of the CPU index
    <index_root>/<version>/item_ids.parquet   one column item_id: string, in row order
    <index_root>/<version>/manifest.json      written last: kind, factory, metric, dim, count,
                                              model_version, spec, search_params, tuning (what build-time
                                              tuning measured, or null), quantizer (how the IVF coarse
                                              quantizer was chosen, or null), recall, faiss_version,
                                              sha256 + bytes of every file
    <index_root>/current                      the published version (core.lifecycle pointer)

``load_index`` verifies every sha256 and size before FAISS reads a byte, so a flipped byte or a
truncated file is refused with a ValueError naming the file. ``publish_index`` / ``stage_index`` /
``rollback_index`` go through the one publish lifecycle (``core.lifecycle.VersionedRoot``): job lease,
stage, manifest last, conditional flip of ``current``, prune (never the current one).
"""
from __future__ import annotations

import io
import shutil
import tempfile
from contextlib import nullcontext
from pathlib import Path

import faiss
import pyarrow as pa
import pyarrow.parquet as pq

from indexing import faiss_index as fi
from indexing.item_index import ItemIndex
from indexing.spec import IndexSpec
from core import artifacts
from core.lifecycle import (InjectedCrash, Lease, Stage, VersionedRoot, check_version_name, current_dir,
                            new_version)
from core.strict import from_dict, to_dict

KIND = "item_index"
INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.parquet"
SERVING_KEYS = frozenset({"nprobe", "ef_search", "k_factor", "gpu", "gpu_float16", "gpu_shard"})


def save_index(index: ItemIndex, directory, extra_manifest: dict | None = None) -> dict:
    """Write ``index`` into ``directory`` (manifest last); returns the manifest.

    The index must carry a measured recall (``ItemIndex.build`` measures it; after ``from_faiss`` or
    ``set_search_params`` call ``index.measure_recall(vectors)``).
    """
    if index.recall is None:
        raise ValueError("this index has no measured recall (it was wrapped with from_faiss or its search params "
                         "changed); call index.measure_recall(vectors) before saving")
    directory = Path(directory)
    if (directory / artifacts.MANIFEST).exists():
        raise FileExistsError(f"{directory} already holds a saved index; versions are immutable")
    directory.mkdir(parents=True, exist_ok=True)
    artifacts.atomic_write_bytes(directory / INDEX_FILE, fi.serialize(index.faiss_index))
    buffer = io.BytesIO()
    pq.write_table(pa.table({"item_id": pa.array(index.item_ids.tolist(), type=pa.string())}), buffer)
    artifacts.atomic_write_bytes(directory / IDS_FILE, buffer.getvalue())
    fields = dict(extra_manifest or {})
    reserved = {"kind", "factory", "metric", "dim", "count", "model_version", "spec", "search_params",
                "tuning", "quantizer", "recall", "faiss_version", "files"} & set(fields)
    if reserved:
        raise ValueError(f"extra_manifest may not override {sorted(reserved)}")
    fields.update({"kind": KIND, "factory": index.factory, "metric": index.spec.metric, "dim": index.dim,
                   "count": index.ntotal, "model_version": index.model_version, "spec": to_dict(index.spec),
                   "search_params": index.search_params, "tuning": index.tuning, "quantizer": index.quantizer,
                   "recall": index.recall,
                   "faiss_version": faiss.__version__})
    return artifacts.write_manifest(directory, fields)


def load_index(directory, spec_overrides: dict | None = None) -> ItemIndex:
    """Verify and load a saved index. ``spec_overrides`` (e.g. {"gpu": "never", "nprobe": 32}) change how
    it is served, not what was built; changing search params clears the recorded recall and tuning.
    Otherwise the saved search params (e.g. the nprobe tuning chose at build time) are the ones served.
    """
    directory = Path(directory)
    manifest = artifacts.verify_manifest(directory)
    if manifest.get("kind") != KIND:
        raise ValueError(f"{directory} holds a {manifest.get('kind')!r} artifact, not an item index")
    not_serving = sorted(set(spec_overrides or {}) - SERVING_KEYS)
    if not_serving:
        raise ValueError(f"spec_overrides may only change how the index is served {sorted(SERVING_KEYS)}, not "
                         f"{not_serving}: those fixed what was built; rebuild the index to change them")
    spec_fields = {**manifest["spec"], **(spec_overrides or {})}
    spec = from_dict(IndexSpec, spec_fields, "spec")
    cpu = fi.deserialize((directory / INDEX_FILE).read_bytes(), str(directory / INDEX_FILE))
    ids = pq.read_table(directory / IDS_FILE).column("item_id").to_numpy(zero_copy_only=False).astype(object)
    if cpu.ntotal != manifest["count"] or cpu.d != manifest["dim"] or len(ids) != manifest["count"]:
        raise ValueError(f"{directory}: index holds {cpu.ntotal} x {cpu.d}, item_ids {len(ids)}, but the manifest "
                         f"says {manifest['count']} x {manifest['dim']}; the artifact is inconsistent, rebuild it")
    recall = manifest.get("recall")
    params_changed = any(k in (spec_overrides or {}) for k in ("nprobe", "ef_search", "k_factor"))
    loaded = ItemIndex(cpu, ids, spec, manifest["model_version"], manifest["factory"],
                       None if params_changed else recall, search_params=manifest["search_params"],
                       tuning=None if params_changed else manifest.get("tuning"),
                       quantizer=manifest.get("quantizer"))
    if not params_changed and loaded.search_params != manifest["search_params"]:
        raise ValueError(f"{directory}: search params {loaded.search_params} differ from the saved "
                         f"{manifest['search_params']}")
    return loaded


def stage_index(root: VersionedRoot, index: ItemIndex, version: str, extra_manifest: dict | None = None,
                save=None) -> Stage:
    """Write ``index`` as the finished (not yet current) version ``root/version``; the caller holds the lease.

    ``save(index, directory, extra_manifest)`` writes the artifact (default ``save_index``; a sharded index
    passes ``indexing.sharded_index.save_sharded``, see ``publish_sharded``)."""
    save = save or save_index
    stage = root.stage(version)
    try:
        if stage.path is not None:
            save(index, stage.path, {**(extra_manifest or {}), "version": version})
        else:
            with tempfile.TemporaryDirectory(prefix="twotower-index-") as tmp:
                save(index, tmp, {**(extra_manifest or {}), "version": version})
                names = sorted(p.relative_to(tmp).as_posix() for p in Path(tmp).rglob("*") if p.is_file())
                for name in [n for n in names if n != artifacts.MANIFEST] + [artifacts.MANIFEST]:  # manifest last
                    with open(Path(tmp) / name, "rb") as fh, stage.storage.open_write(name) as out:
                        shutil.copyfileobj(fh, out, 1 << 20)
        root.finish(stage)
    except InjectedCrash:
        raise
    except BaseException:
        stage.abandon()
        raise
    return stage


def publish_index(index_root, index: ItemIndex, version: str | None = None, keep: int = 3,
                  extra_manifest: dict | None = None, *, lease: Lease | None = None, save=None) -> Path | str:
    """Save ``index`` as a new version of ``index_root``, flip ``current`` to it, keep the newest ``keep``.

    ``version`` defaults to ``core.lifecycle.new_version``. Takes the root's job lease unless the caller holds
    it (``lease``). Returns the version's local directory (its URL on object storage). Callers that publish
    what a user built run ``indexing.gate.check_publishable`` first (the rebuild and ``twotower index`` do).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the published version is always kept), got {keep}")
    root = lease.root if lease is not None else VersionedRoot(index_root)
    if version is not None:
        check_version_name(version)
    with (nullcontext(lease) if lease is not None else root.lock("publishing an index")):
        version = version or new_version(root)
        stage = stage_index(root, index, version, extra_manifest, save=save)
        root.publish(version)
        root.prune(keep)
    return stage.path if stage.path is not None else stage.storage.url


def rollback_index(index_root, to_version: str | None = None, *, vectors_root=None,
                   model_version: str | None = None, model_source: str = "the run's model") -> str:
    """Flip ``index_root/current`` back (default: to the version before the current one); returns it.

    The target is verified (sha256) and, with ``model_version``, must have been built by that model
    (``core.guard.ModelVersionMismatch`` otherwise). With ``vectors_root``, ``vectors/current`` follows to the
    vectors version the index was built from (when it is still kept). Holds both roots' leases. No Beam.
    """
    root = VersionedRoot(index_root)
    vroot = VersionedRoot(vectors_root) if vectors_root is not None else None
    with root.lock("twotower rollback"), (vroot.lock("twotower rollback") if vroot is not None else nullcontext()):
        version = root.rollback(to_version, model_version=model_version, model_source=model_source)
        if vroot is not None:
            vv = root.manifest(version).get("vectors_version")
            if vv and vv in vroot.versions() and vroot.current() != vv:
                vroot.publish(vv)
    return version


def load_current(index_root, spec_overrides: dict | None = None) -> ItemIndex:
    """Load the version ``index_root/current`` points to."""
    return load_index(current_dir(index_root), spec_overrides)

