"""Keras layers that turn RAW feature values into dense vectors, one layer per FeatureSpec kind.

Raw inputs (batch dim B), exactly as the exported towers take them:

  ids                tf.string [B] or [B, L]; "" is padding (lookup index 0, masked by callers)
  categorical        tf.string [B]; "" = missing, which has its own learned row
  multi_categorical  tf.string [B, N] padded with ""; masked mean of the values' rows
  numeric            tf.float32 [B]; NaN = missing
  text               tf.string [B]; lower-cased, punctuation stripped, split on whitespace

Every lookup has ``oov_buckets`` hashed out-of-vocabulary rows, so unseen ids / categories /
tokens get a (shared, trained where seen) vector instead of an error. Lookup layout of a
``StringLookup`` with mask "": 0 = padding/missing, 1..oov = OOV buckets, then the vocabulary.

``FeatureEmbeddings`` returns one vector per feature (a list, in spec order) rather than their
concatenation, so a caller can mask single features per example (``towers.head.TowerHead``).
"""
from __future__ import annotations

import re
from typing import Sequence

from recdata.schema import FeatureSpec
from towers.config import TowerConfig
from towers.tf_env import tf

# Replaced by a space before splitting text (the punctuation set of Keras' TextVectorization).
PUNCTUATION_REGEX = r'[!"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~\']'
# StringLookup refuses an empty vocabulary; a feature with no training values gets this one
# token, which no raw value can equal (tokens never contain NUL), so everything maps to OOV.
EMPTY_VOCABULARY_TOKEN = "\x00<no-training-values>"
# Exported towers name each input after its feature; SavedModel signature inputs must match this.
INPUT_NAME_REGEX = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/]*$")


def check_input_name(name: str, table: str) -> None:
    """Raise ``ValueError`` if ``name`` cannot name a SavedModel signature input."""
    if not INPUT_NAME_REGEX.match(name):
        raise ValueError(
            f"{table} feature name {name!r} cannot name an exported tower input (allowed: letters, digits, "
            "'_', '.', '-', '/', not starting with '_', '-' or '/'); rename the column in the loader"
        )


def tokenize_text(texts: tf.Tensor) -> tf.RaggedTensor:
    """tf.string [B] → ragged tf.string [B, None] of lower-case tokens (UTF-8 aware)."""
    lowered = tf.strings.lower(texts, encoding="utf-8")
    stripped = tf.strings.regex_replace(lowered, PUNCTUATION_REGEX, " ")
    return tf.strings.split(stripped)


def masked_mean(embeddings: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of ``embeddings`` [B, N, d] over positions where ``mask`` [B, N] is true → [B, d].

    Rows with no unmasked position give zeros (not NaN).
    """
    weights = tf.cast(mask, embeddings.dtype)[..., tf.newaxis]
    total = tf.reduce_sum(embeddings * weights, axis=-2)
    count = tf.reduce_sum(weights, axis=-2)
    return total / tf.maximum(count, 1.0)


def _string_lookup(tokens: Sequence[str], oov_buckets: int, name: str) -> tf.keras.layers.StringLookup:
    return tf.keras.layers.StringLookup(
        vocabulary=list(tokens) or [EMPTY_VOCABULARY_TOKEN],
        mask_token="",
        num_oov_indices=oov_buckets,
        name=name,
    )


class IdEmbedding(tf.keras.layers.Layer):
    """User or item id → [..., id_embedding_dim]; exact vocabulary or hashing.

    ``lookup`` maps tf.string ids of any shape to int64 rows (0 for the padding id ""), ``call``
    returns their embeddings. The item-id instance is shared by the item tower and the query
    tower's history encoder, so a history item and a candidate use the same row.
    """

    def __init__(self, tokens: Sequence[str], oov_buckets: int, hash_bins: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        if hash_bins > 0:
            # Hashing with a mask value: "" → 0, every other id → [1, hash_bins].
            self._lookup = tf.keras.layers.Hashing(num_bins=hash_bins + 1, mask_value="",
                                                   name=f"{self.name}_hash")
            self.input_dim = hash_bins + 1
        else:
            self._lookup = _string_lookup(tokens, oov_buckets, f"{self.name}_lookup")
            self.input_dim = int(self._lookup.vocabulary_size())
        self.dim = dim
        self.table = tf.keras.layers.Embedding(self.input_dim, dim, name=f"{self.name}_table")

    def lookup(self, ids: tf.Tensor) -> tf.Tensor:
        """tf.string ids (any shape) → int64 rows, same shape; "" → 0."""
        return tf.cast(self._lookup(ids), tf.int64)

    def embed_rows(self, rows: tf.Tensor) -> tf.Tensor:
        return self.table(rows)

    @property
    def embeddings(self) -> tf.Variable:
        """The [input_dim, dim] table variable (built on first use)."""
        if not self.table.built:
            self.table.build(None)
        return self.table.embeddings

    def mean_of_rows(self, rows: tf.Tensor) -> tf.Tensor:
        """int64 rows [B, L] (0 = padding) → [B, dim], the mean of the non-padding rows' embeddings.

        Uses a sparse lookup, so the gradient touches each distinct row once per batch (a dense
        gather + masked mean sends B·L row updates). Rows with no entries give zeros.
        """
        ids = tf.sparse.from_dense(rows)  # drops the 0 = padding entries
        return tf.nn.safe_embedding_lookup_sparse(self.embeddings, ids, combiner="mean")

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return self.table(self.lookup(ids))


class CategoricalEmbedding(tf.keras.layers.Layer):
    """tf.string [B] → [B, d]. Missing ("") has its own learned row; unseen values use OOV rows."""

    def __init__(self, tokens: Sequence[str], oov_buckets: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.lookup = _string_lookup(tokens, oov_buckets, f"{self.name}_lookup")
        self.table = tf.keras.layers.Embedding(int(self.lookup.vocabulary_size()), dim,
                                               name=f"{self.name}_table")
        self.output_dim = dim

    def encode(self, values: tf.Tensor) -> tf.Tensor:
        """tf.string [B] → int64 rows [B] (the string part of ``call``)."""
        return tf.cast(self.lookup(values), tf.int64)

    def embed(self, rows: tf.Tensor) -> tf.Tensor:
        return self.table(rows)

    def call(self, values: tf.Tensor) -> tf.Tensor:
        return self.embed(self.encode(values))


class MultiCategoricalEmbedding(tf.keras.layers.Layer):
    """tf.string [B, N] padded with "" → [B, d], the masked mean of the values' rows.

    A row with no values (all "") gives zeros.
    """

    def __init__(self, tokens: Sequence[str], oov_buckets: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.lookup = _string_lookup(tokens, oov_buckets, f"{self.name}_lookup")
        self.table = tf.keras.layers.Embedding(int(self.lookup.vocabulary_size()), dim,
                                               name=f"{self.name}_table")
        self.output_dim = dim

    def encode(self, values: tf.Tensor) -> tf.Tensor:
        """tf.string [B, N] → int64 rows [B, N], 0 for padding."""
        return tf.cast(self.lookup(values), tf.int64)

    def embed(self, rows: tf.Tensor) -> tf.Tensor:
        return masked_mean(self.table(rows), rows != 0)

    def call(self, values: tf.Tensor) -> tf.Tensor:
        return self.embed(self.encode(values))


class NumericEmbedding(tf.keras.layers.Layer):
    """tf.float32 [B] (NaN = missing) → [B, 2 + d]: [z-score, missing flag, bucket embedding].

    z-score uses the training mean / std, is clipped to ±``clip`` and is 0 (the mean) when
    missing. Buckets are the training quantile ``boundaries``; missing values get bucket 0.
    """

    def __init__(self, mean: float, std: float, boundaries: Sequence[float], dim: int,
                 clip: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.std = float(std) if std > 0 else 1.0
        self.boundaries = tuple(float(b) for b in boundaries)
        self.clip = float(clip)
        self.table = tf.keras.layers.Embedding(len(self.boundaries) + 2, dim, name=f"{self.name}_table")
        self.output_dim = dim + 2

    def encode(self, values: tf.Tensor) -> tf.Tensor:
        return tf.cast(values, tf.float32)

    def embed(self, values: tf.Tensor) -> tf.Tensor:
        missing = tf.math.is_nan(values)
        filled = tf.where(missing, tf.constant(self.mean, tf.float32), values)
        z = tf.clip_by_value((filled - self.mean) / self.std, -self.clip, self.clip)
        bucket = tf.raw_ops.Bucketize(input=filled, boundaries=list(self.boundaries)) + 1
        bucket = tf.where(missing, tf.zeros_like(bucket), bucket)
        return tf.concat([z[:, tf.newaxis], tf.cast(missing, tf.float32)[:, tf.newaxis],
                          self.table(bucket)], axis=-1)

    def call(self, values: tf.Tensor) -> tf.Tensor:
        return self.embed(self.encode(values))


class TextEmbedding(tf.keras.layers.Layer):
    """tf.string [B] → [B, d], the mean of the first ``max_length`` tokens' rows (zeros if none)."""

    def __init__(self, tokens: Sequence[str], oov_buckets: int, dim: int, max_length: int, **kwargs):
        super().__init__(**kwargs)
        self.lookup = _string_lookup(tokens, oov_buckets, f"{self.name}_lookup")
        self.table = tf.keras.layers.Embedding(int(self.lookup.vocabulary_size()), dim,
                                               name=f"{self.name}_table")
        self.max_length = max_length
        self.output_dim = dim

    def encode(self, texts: tf.Tensor) -> tf.Tensor:
        """tf.string [B] → int64 token rows [B, W] (W ≤ max_length, right-padded with 0)."""
        tokens = tokenize_text(texts)[:, : self.max_length]
        return tf.cast(tf.ragged.map_flat_values(self.lookup, tokens).to_tensor(default_value=0), tf.int64)

    def embed(self, rows: tf.Tensor) -> tf.Tensor:
        """int64 token rows [B, W] (0 = padding; any W) → [B, d]."""
        return masked_mean(self.table(rows), rows != 0)

    def call(self, texts: tf.Tensor) -> tf.Tensor:
        return self.embed(self.encode(texts))


class FeatureEmbeddings(tf.keras.layers.Layer):
    """Embeds the side features of one table: dict of raw inputs → list of [B, d_i] in spec order.

    ``specs`` are the table's FeatureSpecs; ``vocabularies[name]`` is a ``towers.vocab``
    TokenVocabulary (categorical / multi_categorical / text) or NumericStats (numeric).
    """

    def __init__(self, specs: Sequence[FeatureSpec], vocabularies: dict, cfg: TowerConfig, **kwargs):
        super().__init__(**kwargs)
        self.specs = tuple(specs)
        self.encoders = {}
        dim = cfg.feature_embedding_dim
        for i, spec in enumerate(self.specs):
            check_input_name(spec.name, self.name)
            if spec.name not in vocabularies:
                raise ValueError(
                    f"feature {spec.name!r} ({spec.kind}) has no vocabulary/statistics; build the "
                    f"vocabularies from the same FeatureSpecs (have: {sorted(vocabularies)})"
                )
            v = vocabularies[spec.name]
            layer_name = f"f{i}_{_safe(spec.name)}"
            if spec.kind == "categorical":
                layer = CategoricalEmbedding(v.tokens, cfg.oov_buckets, dim, name=layer_name)
            elif spec.kind == "multi_categorical":
                layer = MultiCategoricalEmbedding(v.tokens, cfg.oov_buckets, dim, name=layer_name)
            elif spec.kind == "numeric":
                layer = NumericEmbedding(v.mean, v.std, v.boundaries, dim, name=layer_name)
            elif spec.kind == "text":
                layer = TextEmbedding(v.tokens, cfg.oov_buckets, dim, cfg.text_max_length, name=layer_name)
            else:  # FeatureSpec already rejects unknown kinds; kept for exhaustiveness
                raise ValueError(f"feature {spec.name!r}: unsupported kind {spec.kind!r}")
            self.encoders[spec.name] = layer

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def _require(self, inputs: dict) -> None:
        missing = [n for n in self.names if n not in inputs]
        if missing:
            raise ValueError(f"missing feature input(s) {missing}; got {sorted(inputs)}")

    def encode(self, inputs: dict) -> dict:
        """The string/lookup part: raw inputs → {name: int64 rows (float32 for numeric)}. An
        encoded table (e.g. a catalogue's, computed once) can be gathered and passed to ``embed``."""
        self._require(inputs)
        return {name: self.encoders[name].encode(inputs[name]) for name in self.names}

    def embed(self, encoded: dict) -> list:
        """``encode``'s output → list of [B, d_i] in spec order (the weights part)."""
        return [self.encoders[name].embed(encoded[name]) for name in self.names]

    def call(self, inputs: dict) -> list:
        self._require(inputs)
        return [self.encoders[name](inputs[name]) for name in self.names]  # = embed(encode(inputs))


def _safe(name: str) -> str:
    """A Keras-safe fragment of a feature name (layer names allow [A-Za-z0-9_.-])."""
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)[:40] or "feature"
