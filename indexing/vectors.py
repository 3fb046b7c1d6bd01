"""The item-vectors artifact: Parquet shards + manifest (see shared contracts).

    <root>/<version>/part-00000-of-00004.parquet ...   columns item_id: string,
                                                         vector: list<float32> (all length d),
                                                         model_version: string
    <root>/<version>/manifest.json                      written last (core.artifacts.write_manifest):
        {"kind": "item_vectors", "version", "model_version", "count", "dim", "shards": [...], "files": {...}}

Catalogue order = shard order, then row order inside a shard; row i of ``read_vectors`` is row i of
every index and evaluation built from it. A directory without manifest.json is unfinished.

In-process writers call ``write_vectors``; a distributed writer (Beam) calls ``write_shard`` once per
shard from its workers and ``finalize_vectors`` once at the end.

``directory`` may be a local path or a URL (``s3://...``, ``gs://...``, through ``core.storage``): shards
are then written as whole objects, ``finalize_vectors`` hashes each shard from the bytes it reads anyway
and writes the manifest object last, and ``read_vectors`` checks every object's size and sha256 against
the manifest from the bytes it downloads, before parsing them.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import artifacts
from core.storage import Storage, join_url, open_storage, scheme_of


def _remote(directory) -> Storage | None:
    """The storage of ``directory`` when it is a URL (s3://, gs://); None for a local path."""
    return open_storage(str(directory)) if scheme_of(directory) != "file" else None


def _digest(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
from core.guard import require_same_model

KIND = "item_vectors"
SCHEMA = pa.schema([("item_id", pa.string()), ("vector", pa.list_(pa.float32())),
                    ("model_version", pa.string())])
_SHARD = re.compile(r"^part-(\d{5})-of-(\d{5})\.parquet$")


def shard_name(shard_index: int, num_shards: int) -> str:
    return f"part-{shard_index:05d}-of-{num_shards:05d}.parquet"


def _check_inputs(item_ids, vectors, model_version: str) -> tuple[pa.Array, np.ndarray]:
    """(item ids as an Arrow string array, vectors float32 (n, d)); ids must be unique str (checked in Arrow;
    anything else gets ``indexing.item_index.as_item_ids``' message)."""
    from indexing.arrays import as_float32_matrix, as_item_ids
    vectors = as_float32_matrix(vectors, "vectors")
    if not isinstance(model_version, str) or not model_version:
        raise ValueError(f"model_version must be a non-empty str, got {model_version!r}")
    if isinstance(item_ids, pa.ChunkedArray):
        item_ids = item_ids.combine_chunks()
    if isinstance(item_ids, pa.Array) and pa.types.is_large_string(item_ids.type):
        item_ids = item_ids.cast(pa.string())
    objects = ids = None
    if isinstance(item_ids, pa.Array) and item_ids.type == pa.string():
        ids = item_ids
    else:
        objects = np.asarray(item_ids, dtype=object)
        try:
            ids = pa.array(objects, from_pandas=False) if objects.ndim == 1 and len(objects) else None
        except (pa.ArrowException, TypeError, ValueError):
            ids = None
    if ids is None or ids.type != pa.string() or ids.null_count or len(ids) != len(vectors) \
            or pc.count_distinct(ids).as_py() != len(ids):
        if objects is None:
            objects = np.asarray(item_ids.to_pylist(), dtype=object)
        ids = pa.array(as_item_ids(objects, len(vectors)).tolist(), type=pa.string())  # raises the clear message
    return ids, vectors


# Dictionary encoding only where it pays (model_version: one value), statistics only for the string
# columns: the writer would otherwise try a dictionary for, and compute min/max of, every float.
_PARQUET_OPTIONS = {"use_dictionary": ["model_version"], "write_statistics": ["item_id", "model_version"]}


def write_shard(directory, shard_index: int, num_shards: int, item_ids, vectors, model_version: str) -> str:
    """Write one shard atomically; returns its file name. vectors float32 (s, d), item_ids str (s,)."""
    if not (0 <= shard_index < num_shards):
        raise ValueError(f"shard_index must be in 0..{num_shards - 1}, got {shard_index}")
    ids, vectors = _check_inputs(item_ids, vectors, model_version)
    n, dim = vectors.shape
    if n * dim >= 2**31:
        raise ValueError(f"shard {shard_index} holds {n}x{dim} floats, too many for one list<float32> "
                         "column; write more shards")
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim, type=pa.int32())
    column = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), type=pa.float32()))
    table = pa.table({"item_id": ids, "vector": column,
                      "model_version": pa.array([model_version] * n, type=pa.string())}, schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **_PARQUET_OPTIONS)
    name = shard_name(shard_index, num_shards)
    storage = _remote(directory)
    if storage is not None:
        storage.write_bytes(name, buffer.getvalue())  # one whole object: readers never see a part of it
    else:
        artifacts.atomic_write_bytes(Path(directory) / name, buffer.getvalue())
    return name


def _read_shard(path, expected_model_version: str | None, data: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(item ids object ndarray of str (s,), vectors float32 (s, d)) of one shard."""
    ids, vectors = _read_shard_arrow(path, expected_model_version, data)
    return ids.to_numpy(zero_copy_only=False).astype(object), vectors


def _read_shard_arrow(path, expected_model_version: str | None, data: bytes | None = None
                      ) -> tuple[pa.Array, np.ndarray]:
    """``path`` names the shard in messages; ``data`` (its bytes, already downloaded) is parsed instead of
    reading ``path`` when given."""
    try:
        table = pq.read_table(pa.BufferReader(data) if data is not None else path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: not a readable Parquet vectors shard: {exc}") from None
    missing = {"item_id", "vector", "model_version"} - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; has {table.column_names}")
    ids = table.column("item_id").combine_chunks()
    column = table.column("vector").combine_chunks()
    if ids.null_count or column.null_count:
        raise ValueError(f"{path}: {ids.null_count} null item_id(s) and {column.null_count} null vector(s)")
    if not pa.types.is_floating(column.type.value_type):
        raise ValueError(f"{path}: vector must be list<float32>, got {column.type}")
    lengths = column.value_lengths().to_numpy()
    dim = int(lengths[0]) if len(lengths) else 0
    if len(lengths) and (lengths != dim).any():
        j = int(np.flatnonzero(lengths != dim)[0])
        raise ValueError(f"{path}: vectors have different lengths ({dim} in row 0, {int(lengths[j])} in row {j}, "
                         f"item {ids[j].as_py()!r}); every vector must have the same dimension")
    if expected_model_version is not None and len(table):
        versions = sorted(map(str, set(table.column("model_version").unique().to_pylist())))
        require_same_model(expected_model_version, versions[0] if len(versions) == 1 else " and ".join(versions),
                           expected_from="the vectors manifest", found_from=f"the vectors shard {path}",
                           fix="shards from different models were mixed; re-embed the items")
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return ids, vectors.reshape(len(lengths), dim)


RESERVED_FIELDS = frozenset({"kind", "version", "model_version", "count", "dim", "shards", "files"})


def finalize_vectors(directory, model_version: str, version: str | None = None, *,
                     expected_count: int | None = None, extra_manifest: dict | None = None) -> dict:
    """Check the shards in ``directory`` form one complete set, then write the manifest (last).

    expected_count: the number of vectors the writer meant to write (e.g. source rows minus dead
        letters); a different count in the shards (a lost or repeated shard piece) is refused.
    extra_manifest: more JSON fields for the manifest (e.g. the embed job's dead-letter counts); they
        may not replace the artifact's own fields (``RESERVED_FIELDS``).
    """
    storage = _remote(directory)
    directory = Path(directory) if storage is None else str(directory).rstrip("/")
    extra = dict(extra_manifest or {})
    clash = sorted(RESERVED_FIELDS & set(extra))
    if clash:
        raise ValueError(f"extra_manifest may not set {clash}: finalize_vectors writes those itself; rename "
                         "the extra field(s)")
    objects = ([k for k in storage.list() if "/" not in k] if storage is not None
               else [p.name for p in directory.iterdir()])
    names = sorted(n for n in objects if _SHARD.match(n))
    if not names:
        raise ValueError(f"{directory} holds no part-XXXXX-of-XXXXX.parquet shards; write them first")
    totals = {int(_SHARD.match(n).group(2)) for n in names}
    expected = [shard_name(i, next(iter(totals))) for i in range(next(iter(totals)))] if len(totals) == 1 else None
    if expected != names:
        raise ValueError(f"{directory}: shards {names} are not one complete set part-i-of-N (leftovers from an "
                         "earlier attempt, or a shard is missing); remove the directory and rewrite it")
    count, dim, id_arrays, digests = 0, None, [], {}
    for name in names:
        data = storage.read_bytes(name) if storage is not None else None
        if data is not None:
            digests[name] = _digest(data)  # hashed from the bytes read anyway: one download per shard
        ids, vectors = _read_shard_arrow(_join(directory, name), model_version, data)
        del data
        if len(ids):
            if dim is not None and vectors.shape[1] != dim:
                raise ValueError(f"{_join(directory, name)}: dimension {vectors.shape[1]}, other shards have {dim}")
            dim = vectors.shape[1]
        id_arrays.append(ids.cast(pa.string()))
        count += len(ids)
    if count and pc.count_distinct(pa.chunked_array(id_arrays, pa.string())).as_py() != count:
        counts = pc.value_counts(pa.chunked_array(id_arrays, pa.string()))
        repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))[:3].to_pylist()
        raise ValueError(f"{directory}: item ids repeat across shards (e.g. {repeated}); each item must appear once")
    if dim is None:
        raise ValueError(f"{directory}: every shard is empty; there are no vectors")
    if expected_count is not None and count != expected_count:
        raise ValueError(f"{directory}: the shards hold {count} vectors but {expected_count} were expected (a "
                         "shard piece was lost or written twice); the manifest was not written, rerun the job")
    fields = {**extra, "kind": KIND, "version": version or str(directory).rstrip("/").rsplit("/", 1)[-1],
              "model_version": model_version, "count": count, "dim": dim, "shards": names}
    if storage is None:
        return artifacts.write_manifest(directory, fields)
    for name in objects:  # any other object in the version (none today) is listed too
        if name not in digests and name != artifacts.MANIFEST:
            digests[name] = _digest(storage.read_bytes(name))
    manifest = {**fields, "files": dict(sorted(digests.items()))}
    storage.write_bytes(artifacts.MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return manifest


def _join(directory, name: str) -> str | Path:
    return directory / name if isinstance(directory, Path) else join_url(str(directory), name)


def write_vectors(directory, item_ids, vectors, model_version: str, num_shards: int = 4) -> dict:
    """Write ``vectors`` float32 (n, d) with ``item_ids`` str (n,) as ``num_shards`` contiguous shards.

    ``directory`` is the version directory (``<root>/<version>``); it must not already hold a finished
    artifact. Returns the manifest.
    """
    storage = _remote(directory)
    if storage is not None:
        if storage.exists(artifacts.MANIFEST):
            raise FileExistsError(f"{directory} already holds a finished vectors artifact; versions are immutable, "
                                  "write to a new version directory")
    else:
        directory = Path(directory)
        if (directory / artifacts.MANIFEST).exists():
            raise FileExistsError(f"{directory} already holds a finished vectors artifact; versions are immutable, "
                                  "write to a new version directory")
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
    ids, vectors = _check_inputs(item_ids, vectors, model_version)
    if storage is not None:
        for key in storage.list():  # an interrupted earlier attempt (no manifest) may have left shards
            if _SHARD.match(key):
                storage.delete(key)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.iterdir():  # an interrupted earlier attempt (no manifest) may have left shards
            if _SHARD.match(stale.name):
                os.unlink(stale)
    bounds = np.linspace(0, len(ids), num_shards + 1).round().astype(int)
    for i in range(num_shards):
        lo, hi = bounds[i], bounds[i + 1]
        write_shard(directory, i, num_shards, ids[lo:hi], vectors[lo:hi], model_version)
    return finalize_vectors(directory, model_version)


def read_vectors(directory) -> tuple[np.ndarray, np.ndarray, dict]:
    """(item_ids object ndarray of str (n,), vectors float32 (n, d), manifest), manifest verified first.

    Raises ValueError for a corrupt/truncated file, a wrong kind, mismatched counts or dims, mixed model
    versions, or NaN/inf vectors (naming the shard and item).
    """
    storage = _remote(directory)
    if storage is None:
        directory = Path(directory)
        manifest = artifacts.verify_manifest(directory)
    else:
        directory = str(directory).rstrip("/")
        manifest = _remote_manifest(storage, directory)
    if manifest.get("kind") != KIND:
        raise ValueError(f"{directory} holds a {manifest.get('kind')!r} artifact, not {KIND!r}")
    all_ids, all_vectors = [], []
    for name in manifest["shards"]:
        data = None
        if storage is not None:  # verified against the manifest before it is parsed, one shard at a time
            data = _verified_object(storage, directory, name, manifest["files"].get(name))
        ids, vectors = _read_shard(_join(directory, name), manifest["model_version"], data)
        del data
        if len(ids) and vectors.shape[1] != manifest["dim"]:
            raise ValueError(f"{_join(directory, name)}: dimension {vectors.shape[1]}, manifest says {manifest['dim']}")
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            j = int(np.flatnonzero(~finite)[0])
            raise ValueError(f"{_join(directory, name)}: {int((~finite).sum())} vectors contain NaN/inf, first is item "
                             f"{ids[j]!r}; re-embed those items")
        all_ids.append(ids)
        all_vectors.append(vectors.reshape(-1, manifest["dim"]))
    item_ids = np.concatenate(all_ids)
    vectors = np.ascontiguousarray(np.concatenate(all_vectors), dtype=np.float32)
    if len(item_ids) != manifest["count"]:
        raise ValueError(f"{directory}: shards hold {len(item_ids)} vectors, manifest says {manifest['count']}")
    return item_ids, vectors, manifest


def _remote_manifest(storage: Storage, directory: str) -> dict:
    """The manifest of a vectors artifact on object storage, after every non-shard object it lists was
    verified (the shards are verified as they are read)."""
    try:
        manifest = json.loads(storage.read_bytes(artifacts.MANIFEST))
    except FileNotFoundError:
        raise FileNotFoundError(f"{_join(directory, artifacts.MANIFEST)} is missing: {directory} is not a finished "
                                "artifact (it was never completed, or was written by an interrupted job); rebuild it"
                                ) from None
    except ValueError:
        raise ValueError(f"{_join(directory, artifacts.MANIFEST)} is not readable JSON; rebuild the artifact") from None
    shards = set(manifest.get("shards", ()))
    for name, meta in manifest.get("files", {}).items():
        if name not in shards:
            _verified_object(storage, directory, name, meta)
    return manifest


def _verified_object(storage: Storage, directory: str, name: str, meta: dict | None) -> bytes:
    """The bytes of ``name``, checked against its manifest entry (size, sha256) before anyone parses them."""
    url = _join(directory, name)
    if meta is None:
        raise ValueError(f"{url}: named by the manifest but not listed with a sha256; the artifact is damaged, "
                         "rebuild it")
    try:
        data = storage.read_bytes(name)
    except FileNotFoundError:
        raise ValueError(f"{url}: listed in the manifest but missing; the artifact is incomplete, rebuild it") from None
    got = _digest(data)
    if got["bytes"] != meta["bytes"]:
        raise ValueError(f"{url}: size {got['bytes']} bytes, manifest says {meta['bytes']}; the object is "
                         "truncated or was modified after publishing; rebuild it or roll back")
    if got["sha256"] != meta["sha256"]:
        raise ValueError(f"{url}: sha256 {got['sha256'][:12]}… does not match the manifest {meta['sha256'][:12]}…; "
                         "the object is corrupt or was modified after publishing; rebuild it or roll back")
    return data
