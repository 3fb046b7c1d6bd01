"""Vocabularies and numeric statistics of every tower input, adapted from TRAINING data only.

``build_vocabularies(dataset, train, cfg)`` looks only at the training interactions and the
item / user rows they name: item ids and user ids are counted over training interactions;
categorical / multi_categorical / text tokens and numeric statistics over the items (users) that
occur in training. Validation and test rows never shape a vocabulary, so held-out ids and
categories exercise the OOV path exactly as unseen ones will in production.

Token order is by descending training count, ties by the token string (deterministic).

On disk (``save_vocabularies`` / ``load_vocabularies``), under ``model/vocab/``::

  vocab.json                     kinds, sizes, files, numeric statistics, OOV / hashing settings
  item_id.txt, user_id.txt       one id per line (absent when ids are hashed)
  item.<i>.<name>.txt            one token per line for each token feature (user.<i>.<name>.txt)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import pandas as pd

from recdata.schema import Dataset, FeatureSpec
from towers.config import TowerConfig
from towers.inputs import check_user_feature_names, feature_column
from core.artifacts import atomic_write_json, atomic_write_text

VOCAB_FORMAT = 1


@dataclass(frozen=True)
class IdVocabulary:
    """Ids with their own embedding row (most frequent first); the rest share ``oov_buckets``.

    With ``hash_bins > 0`` ids are hashed instead and ``tokens`` is empty.
    """

    tokens: tuple[str, ...]
    oov_buckets: int
    hash_bins: int = 0
    num_seen: int = 0  # distinct ids in training (before the size cap / min count)


@dataclass(frozen=True)
class TokenVocabulary:
    """Tokens of a categorical / multi_categorical / text feature, most frequent first."""

    kind: str
    tokens: tuple[str, ...]
    num_seen: int = 0


@dataclass(frozen=True)
class NumericStats:
    """Training statistics of a numeric feature (finite values only).

    mean, std          for the z-score (std 1.0 when constant or absent)
    boundaries         increasing quantile bucket boundaries
    missing_fraction   share of training rows with NaN
    """

    mean: float
    std: float
    boundaries: tuple[float, ...]
    missing_fraction: float


FeatureVocabulary = Union[TokenVocabulary, NumericStats]


@dataclass(frozen=True)
class Vocabularies:
    item_id: IdVocabulary
    user_id: IdVocabulary
    item_specs: tuple[FeatureSpec, ...]
    user_specs: tuple[FeatureSpec, ...]
    item_features: dict  # name -> FeatureVocabulary
    user_features: dict


def build_vocabularies(dataset: Dataset, train: pd.DataFrame, cfg: TowerConfig) -> Vocabularies:
    """Adapt every lookup / statistic from the training interactions ``train`` (see module doc)."""
    if len(train) == 0:
        raise ValueError("cannot build vocabularies from an empty training split; check the split")
    check_user_feature_names(dataset.user_features)
    train_items = dataset.items[dataset.items["item_id"].isin(pd.unique(train["item_id"]))]
    train_users = dataset.users[dataset.users["user_id"].isin(pd.unique(train["user_id"]))]
    return Vocabularies(
        item_id=_id_vocabulary(train["item_id"], cfg, "item_id"),
        user_id=_id_vocabulary(train["user_id"], cfg, "user_id"),
        item_specs=tuple(dataset.item_features),
        user_specs=tuple(dataset.user_features),
        item_features={s.name: _feature_vocabulary(train_items, s, cfg, "items") for s in dataset.item_features},
        user_features={s.name: _feature_vocabulary(train_users, s, cfg, "users") for s in dataset.user_features},
    )


def _id_vocabulary(ids: pd.Series, cfg: TowerConfig, col: str) -> IdVocabulary:
    ids = ids.astype(str)
    if (ids == "").any():
        raise ValueError(
            f"training interactions have {int((ids == '').sum())} empty {col} value(s); \"\" is the "
            "padding id. Drop those rows or give them real ids in the loader"
        )
    counts = _sorted_counts(ids.to_numpy(dtype=object))
    if cfg.id_hash_bins > 0:
        return IdVocabulary((), cfg.oov_buckets, cfg.id_hash_bins, len(counts))
    kept = counts[counts["count"] >= cfg.min_id_count].head(cfg.max_id_vocab)
    tokens = tuple(kept["token"].tolist())
    _check_tokens(tokens, col)
    return IdVocabulary(tokens, cfg.oov_buckets, 0, len(counts))


def _feature_vocabulary(table: pd.DataFrame, spec: FeatureSpec, cfg: TowerConfig, name: str) -> FeatureVocabulary:
    values = feature_column(table, spec, name)
    where = f"{name}.{spec.name}"
    if spec.kind == "numeric":
        return _numeric_stats(values, cfg.numeric_buckets)
    if spec.kind == "categorical":
        flat, cap = values, cfg.max_category_vocab
    elif spec.kind == "multi_categorical":
        flat, cap = values.ravel(), cfg.max_category_vocab
    else:  # text
        flat, cap = _text_tokens(values), cfg.text_max_tokens
    flat = flat[flat != ""]
    counts = _sorted_counts(flat)
    tokens = tuple(counts["token"].head(cap).tolist())
    _check_tokens(tokens, where)
    return TokenVocabulary(spec.kind, tokens, len(counts))


def _numeric_stats(values: np.ndarray, buckets: int) -> NumericStats:
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    missing = float(np.isnan(values).mean()) if len(values) else 1.0
    if len(finite) == 0:
        return NumericStats(0.0, 1.0, (), missing)
    std = float(finite.std())
    quantiles = np.quantile(finite, np.linspace(0.0, 1.0, buckets + 1)[1:-1])
    boundaries = tuple(float(b) for b in np.unique(quantiles.astype(np.float32)))
    return NumericStats(float(finite.mean()), std if std > 0 else 1.0, boundaries, missing)


def _text_tokens(texts: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Tokens of ``texts`` exactly as the towers' TextEmbedding tokenises them."""
    from towers.features import tokenize_text  # TensorFlow only when a text feature exists
    from towers.tf_env import tf

    parts = []
    for start in range(0, len(texts), chunk):
        tokens = tokenize_text(tf.constant(texts[start:start + chunk].astype(object), tf.string))
        parts.append(tokens.flat_values.numpy().astype(object))
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=object)
    return np.array([t.decode("utf-8") for t in flat], dtype=object)


def _sorted_counts(values: np.ndarray) -> pd.DataFrame:
    if len(values) == 0:
        return pd.DataFrame({"token": pd.Series([], dtype=object), "count": pd.Series([], dtype=np.int64)})
    uniq, counts = np.unique(values.astype(str), return_counts=True)
    order = np.lexsort((uniq, -counts))  # count desc, then token asc
    return pd.DataFrame({"token": uniq[order].astype(object), "count": counts[order]})


def _check_tokens(tokens: Sequence[str], where: str) -> None:
    bad = next((t for t in tokens if "\n" in t or "\r" in t), None)
    if bad is not None:
        raise ValueError(
            f"{where} value {bad!r} contains a line break; vocabulary files hold one value per line. "
            "Strip line breaks from that column in the loader"
        )


# ----------------------------------------------------------------------------------------------
# files


def save_vocabularies(vocab: Vocabularies, directory: str | Path) -> Path:
    """Write ``vocab.json`` and the token files under ``directory``; returns ``vocab.json``'s path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": VOCAB_FORMAT, "item_id": _save_id(vocab.item_id, directory, "item_id"),
            "user_id": _save_id(vocab.user_id, directory, "user_id")}
    for side, specs, table in (("item", vocab.item_specs, vocab.item_features),
                               ("user", vocab.user_specs, vocab.user_features)):
        entries = []
        for i, spec in enumerate(specs):
            v = table[spec.name]
            entry = {"name": spec.name, "kind": spec.kind}
            if isinstance(v, NumericStats):
                entry.update(mean=v.mean, std=v.std, boundaries=list(v.boundaries),
                             missing_fraction=v.missing_fraction)
            else:
                fname = f"{side}.{i}.{_file_safe(spec.name)}.txt"
                _write_lines(directory / fname, v.tokens)
                entry.update(file=fname, size=len(v.tokens), num_seen=v.num_seen)
            entries.append(entry)
        meta[f"{side}_features"] = entries
    return atomic_write_json(directory / "vocab.json", meta)


def _save_id(v: IdVocabulary, directory: Path, name: str) -> dict:
    entry = {"oov_buckets": v.oov_buckets, "hash_bins": v.hash_bins, "num_seen": v.num_seen, "size": len(v.tokens)}
    if v.hash_bins == 0:
        _write_lines(directory / f"{name}.txt", v.tokens)
        entry["file"] = f"{name}.txt"
    return entry


def load_vocabularies(directory: str | Path) -> Vocabularies:
    """Inverse of ``save_vocabularies``; raises ``ValueError`` naming a missing / inconsistent file."""
    directory = Path(directory)
    path = directory / "vocab.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {directory} is not a saved vocabulary directory")
    meta = json.loads(path.read_text())
    if meta.get("format") != VOCAB_FORMAT:
        raise ValueError(f"{path}: vocabulary format {meta.get('format')!r}, this code reads {VOCAB_FORMAT}")

    def ids(entry):
        tokens = _read_lines(directory / entry["file"], entry["size"]) if entry.get("file") else ()
        return IdVocabulary(tokens, entry["oov_buckets"], entry["hash_bins"], entry["num_seen"])

    def features(entries):
        specs, table = [], {}
        for e in entries:
            specs.append(FeatureSpec(e["name"], e["kind"]))
            if e["kind"] == "numeric":
                table[e["name"]] = NumericStats(e["mean"], e["std"], tuple(e["boundaries"]), e["missing_fraction"])
            else:
                table[e["name"]] = TokenVocabulary(e["kind"], _read_lines(directory / e["file"], e["size"]),
                                                   e["num_seen"])
        return tuple(specs), table

    item_specs, item_features = features(meta["item_features"])
    user_specs, user_features = features(meta["user_features"])
    return Vocabularies(ids(meta["item_id"]), ids(meta["user_id"]), item_specs, user_specs,
                        item_features, user_features)


def _write_lines(path: Path, tokens: Sequence[str]) -> None:
    atomic_write_text(path, "".join(t + "\n" for t in tokens))


def _read_lines(path: Path, expected: int) -> tuple[str, ...]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing but vocab.json lists it; the vocabulary directory is incomplete")
    text = path.read_text(encoding="utf-8")
    tokens = tuple(text.split("\n")[:-1]) if text else ()
    if len(tokens) != expected:
        raise ValueError(f"{path}: {len(tokens)} lines, vocab.json says {expected}; the file is truncated or edited")
    return tokens


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:60] or "feature"
