"""String vocabularies built from training data, with hashed out-of-vocabulary buckets.

Index layout (the same as ``tf.keras.layers.StringLookup``)::

    [mask (index 0, only if mask_token is set)] [num_oov_buckets OOV indices] [tokens, most frequent first]

so a vocabulary file written here can be handed to ``StringLookup(vocabulary=path,
num_oov_indices=num_oov_buckets, mask_token=...)`` and gives the same index for every known
token. Unknown values never fail: they go to OOV bucket ``stable_hash(value) % num_oov_buckets``
(SipHash-2-4 via ``pandas.util.hash_array`` with its fixed key: the same in every process and on
every machine, unlike Python's ``hash``; TF hashes OOV values with FarmHash instead, so only
the OOV *bucket* of an unknown value can differ between the two).

File format: ``save(path)`` writes the tokens one per line (UTF-8, most frequent first) and
``path + ".json"`` with num_oov_buckets, mask_token and counts.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from core import artifacts


def stable_hash(values) -> np.ndarray:
    """uint64 hash of each value's string form; identical across processes, runs and machines."""
    arr = np.asarray(pd.Series(values, dtype=object).astype(str), dtype=object)
    return pd.util.hash_array(arr, categorize=False)


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]
    num_oov_buckets: int = 1
    mask_token: str | None = None
    counts: tuple[int, ...] = ()
    _index: pd.Index = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.num_oov_buckets < 1:
            raise ValueError(f"num_oov_buckets must be >= 1 so unknown values have somewhere to go, "
                             f"got {self.num_oov_buckets}")
        index = pd.Index(list(self.tokens), dtype=object)
        if not index.is_unique:
            dup = index[index.duplicated()].tolist()[:5]
            raise ValueError(f"vocabulary tokens must be unique; duplicates {dup}")
        if self.mask_token is not None and self.mask_token in index:
            raise ValueError(f"the mask token {self.mask_token!r} must not be one of the tokens")
        if self.counts and len(self.counts) != len(self.tokens):
            raise ValueError(f"counts has {len(self.counts)} entries for {len(self.tokens)} tokens")
        object.__setattr__(self, "_index", index)

    # ---------------------------------------------------------------------------------------- build
    @classmethod
    def build(cls, values: Iterable, min_count: int = 1, max_size: int | None = None,
              num_oov_buckets: int = 1, mask_token: str | None = None) -> "Vocabulary":
        """Vocabulary of ``values`` (flat; lists of lists for multi-valued features are flattened).

        Tokens seen fewer than ``min_count`` times are dropped; at most ``max_size`` tokens are kept
        (the most frequent). Order: count descending, then token ascending (deterministic).
        ``mask_token`` (e.g. "" for padding) is never a token. Missing values (None/NaN) are skipped.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, got {max_size}")
        s = _flat_series(values).dropna().astype(str)
        if mask_token is not None:
            s = s[s != mask_token]
        vc = s.value_counts(sort=False)
        vc = vc[vc >= min_count]
        df = pd.DataFrame({"token": vc.index.astype(str), "count": vc.to_numpy()})
        df = df.sort_values(["count", "token"], ascending=[False, True], kind="stable")
        if max_size is not None:
            df = df.iloc[:max_size]
        return cls(tuple(df["token"].tolist()), num_oov_buckets, mask_token,
                   tuple(int(c) for c in df["count"].tolist()))

    # ---------------------------------------------------------------------------------------- use
    @property
    def offset(self) -> int:
        """Index of the first token (after the mask and OOV indices)."""
        return (1 if self.mask_token is not None else 0) + self.num_oov_buckets

    @property
    def size(self) -> int:
        """Total number of indices: mask + OOV buckets + tokens (the embedding table's row count)."""
        return self.offset + len(self.tokens)

    def __len__(self) -> int:
        return self.size

    def lookup(self, values) -> np.ndarray:
        """int64 indices with the shape of ``values`` (any array-like of str / ids; never raises on unknowns)."""
        arr = np.asarray(values, dtype=object)
        shape = arr.shape
        flat = arr.reshape(-1)
        if flat.size == 0:
            return np.zeros(shape, dtype=np.int64)
        codes, uniques = pd.factorize(pd.Series(flat, dtype=object), use_na_sentinel=False)
        uniq = pd.Series(uniques, dtype=object)
        is_missing = uniq.isna().to_numpy()
        uniq_str = uniq.where(~is_missing, "").astype(str)
        pos = self._index.get_indexer(uniq_str.to_numpy(dtype=object))
        mask_base = 1 if self.mask_token is not None else 0
        out = np.where(pos >= 0, pos + self.offset,
                       mask_base + (stable_hash(uniq_str) % np.uint64(self.num_oov_buckets)).astype(np.int64))
        if self.mask_token is not None:
            out = np.where(uniq_str.to_numpy(dtype=object) == self.mask_token, 0, out)
        return out.astype(np.int64)[codes].reshape(shape)

    def token(self, index: int) -> str:
        """The token at ``index`` ("[MASK]" / "[OOV]" for the reserved indices)."""
        if self.mask_token is not None and index == 0:
            return "[MASK]"
        if index < self.offset:
            return "[OOV]"
        return self.tokens[index - self.offset]

    # ----------------------------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokens file (one per line) and ``<path>.json`` atomically; returns ``path``."""
        path = Path(path)
        bad = [t for t in self.tokens if "\n" in t or "\r" in t]
        if bad:
            raise ValueError(f"tokens {bad[:3]!r} contain line breaks and cannot be written one per line; "
                             "clean the feature values (e.g. replace line breaks by spaces)")
        artifacts.atomic_write_text(path, "".join(t + "\n" for t in self.tokens))
        artifacts.atomic_write_json(_meta_path(path), {
            "num_oov_buckets": self.num_oov_buckets, "mask_token": self.mask_token, "size": len(self.tokens),
            "counts": list(self.counts), "tokens_sha256": artifacts.sha256_file(path),
            "hash": "pandas.util.hash_array (SipHash-2-4) of the UTF-8 string, modulo num_oov_buckets",
        })
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """Read a vocabulary written by ``save`` (checks the tokens file against its recorded sha256)."""
        path = Path(path)
        meta_path = _meta_path(path)
        for p in (path, meta_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} does not exist; a vocabulary is saved as {path.name} plus "
                                        f"{meta_path.name} by Vocabulary.save")
        meta = json.loads(meta_path.read_text())
        digest = artifacts.sha256_file(path)
        if digest != meta.get("tokens_sha256"):
            raise ValueError(f"{path}: sha256 {digest[:12]}… does not match {meta_path.name}; the tokens file was "
                             "modified or truncated after saving. Rebuild the vocabulary")
        text = path.read_text(encoding="utf-8")
        tokens = tuple(text.split("\n")[:-1]) if text else ()
        if len(tokens) != meta["size"]:
            raise ValueError(f"{path} holds {len(tokens)} tokens, {meta_path.name} says {meta['size']}")
        return cls(tokens, int(meta["num_oov_buckets"]), meta["mask_token"], tuple(meta.get("counts", ())))


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _flat_series(values) -> pd.Series:
    """One value per row: 2-D arrays are raveled, list-valued cells (multi-valued features) exploded."""
    if isinstance(values, pd.Series):
        s = values.reset_index(drop=True)
    elif isinstance(values, np.ndarray):
        s = pd.Series(values.reshape(-1), dtype=values.dtype if values.dtype != object else object)
    else:
        s = pd.Series(list(values), dtype=object)
    if s.dtype == object and len(s) and s.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
        s = s.explode()  # empty lists become NaN and are dropped with the missing values
    return s
