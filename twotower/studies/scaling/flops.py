"""Parameters and training compute of the CLUE user encoder, from its architecture and the examples seen.

Parameters (``EncoderShape``). N = the encoder's NON-EMBEDDING trainable parameters, the count
scaling laws use (Kaplan et al. 2020): with width d, feed-forward width f, layers ℓ and item
vectors of width d_in (item-id vector + the item feature vectors when ``sequence.item_features``)

    N = (d_in·d + d)                       item projection
      + ℓ·(4d² + 4d                        attention Q, K, V, output (heads × head_dim = d), biases
           + 2d·f + f + d                  feed-forward in / out
           + 4d)                           two layer norms
      + 2d                                 final layer norm
      = d_in·d + ℓ·(4d² + 2df + 9d + f) + 3d

Embedding tables (item-id and item-feature tables shared with the item tower, position and
time-gap tables) are NOT counted in N; ``count_encoder_parameters`` reports them separately. The
CLUE projection head (two dense layers width → p → p) belongs to the objective, not the encoder:
P = d·p + p + p² + p, counted in compute, not in N.

Compute per training epoch (``clue_epoch_flops``). Each example gives two views of its history
(n = its history length, already capped at L = max_history): "crops" two of
``min(ceil(crop·n), n)`` items (ceil in float32, as the views are made), "windows" ⌊n/2⌋ and
n − ⌊n/2⌋ (a one-item history gives 1 and 1). For a view of t valid tokens the FORWARD pass costs

    2·N·t                 every dense layer, 2 FLOPs per multiply-add per token
  + 4·ℓ·d·t²              attention scores QKᵀ (2·t²·d) and their weighted sum of V (2·t²·d)
  + 2·P                   the projection head, once per view

and each batch of b examples adds 2·b²·p for the [b, b] similarity logits. Training costs 3× the
forward pass (the backward pass ≈ 2× forward: gradients w.r.t. activations and weights), so

    C_epoch = 3 · [ Σ_views (2N·t + 4ℓd·t² + 2P) + Σ_batches 2b²p ]

which is the usual 6·N·tokens plus the attention and contrastive terms. Tokens are the valid
(non-padding) history positions: padding columns, layer-norm/softmax/GELU element-wise work,
dropout and embedding lookups are not counted (they are O(tokens·d), small next to O(tokens·d²)).
Batches: ⌊n/b⌋ full batches and one of n mod b (the remainder is kept, as in training).

``count_encoder_parameters`` counts the same N from a built TensorFlow encoder (to check the formula).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

TRAINING_MULTIPLIER = 3  # forward + backward ≈ 3 × forward


@dataclass(frozen=True)
class EncoderShape:
    """num_layers ℓ, width d, ff_dim f, input_dim d_in (item vector width), projection_dim p."""

    num_layers: int
    width: int
    ff_dim: int
    input_dim: int
    projection_dim: int

    def __post_init__(self):
        for key, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"EncoderShape.{key} must be a positive int, got {value!r}")

    @property
    def non_embedding_params(self) -> int:
        """N (see the module docstring)."""
        d, f, ell = self.width, self.ff_dim, self.num_layers
        return self.input_dim * d + ell * (4 * d * d + 2 * d * f + 9 * d + f) + 3 * d

    @property
    def projection_params(self) -> int:
        """P: the CLUE projection head, Dense(d → p) + Dense(p → p) with biases."""
        d, p = self.width, self.projection_dim
        return d * p + p + p * p + p


def item_vector_width(id_embedding_dim: int, feature_embedding_dim: int, item_feature_kinds: Sequence[str],
                      item_features: bool) -> int:
    """d_in: the width of a history item's vector before the item projection: the item-id vector,
    plus (``item_features``) one vector per item feature: ``feature_embedding_dim`` each, + 2 for
    a numeric feature (its z-score and missing flag) — see ``towers.features``."""
    width = int(id_embedding_dim)
    if item_features:
        for kind in item_feature_kinds:
            if kind not in ("categorical", "multi_categorical", "numeric", "text"):
                raise ValueError(f"unknown item feature kind {kind!r}; expected categorical, multi_categorical, "
                                 "numeric or text")
            width += feature_embedding_dim + (2 if kind == "numeric" else 0)
    return width


def view_lengths(history_lengths: np.ndarray, views: str, crop: float) -> tuple[np.ndarray, np.ndarray]:
    """Valid tokens of the two views of each history, int64 (n,) each (see the module docstring)."""
    n = np.asarray(history_lengths)
    if n.ndim != 1 or (n.size and (not np.issubdtype(n.dtype, np.integer) or n.min() < 0)):
        raise ValueError(f"history_lengths must be a 1-D array of ints >= 0, got {n.dtype} {n.shape}")
    n = n.astype(np.int64)
    if views == "windows":
        one = n == 1
        split = np.where(one, 0, n // 2)
        return np.where(one, n, split), n - split
    if views != "crops":
        raise ValueError(f"views must be 'crops' or 'windows', got {views!r}")
    if not 0.0 < crop <= 1.0:
        raise ValueError(f"crop must be in (0, 1], got {crop!r}")
    size = np.minimum(np.ceil(np.float32(crop) * n.astype(np.float32)).astype(np.int64), n)
    return size, size


@dataclass(frozen=True)
class ClueFlops:
    """Training FLOPs of one epoch by term (each already × ``TRAINING_MULTIPLIER``), and its size.

    dense      6·N·tokens;  attention  12·ℓ·d·Σ t²;  head  6·P·views;  logits  6·p·Σ b²
    tokens     valid history tokens through the encoder (both views);  examples  n
    """

    dense: float
    attention: float
    head: float
    logits: float
    tokens: int
    examples: int

    @property
    def total(self) -> float:
        return self.dense + self.attention + self.head + self.logits

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def clue_epoch_flops(shape: EncoderShape, history_lengths: np.ndarray, batch_size: int, views: str = "crops",
                     crop: float = 0.6) -> ClueFlops:
    """One epoch of CLUE training over examples with these history lengths (int (n,), capped at L)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    first, second = view_lengths(history_lengths, views, crop)
    n = len(first)
    tokens = int(first.sum() + second.sum())
    squares = float(np.sum(first.astype(np.float64) ** 2) + np.sum(second.astype(np.float64) ** 2))
    full, rest = divmod(n, batch_size)
    batch_squares = float(full * batch_size**2 + rest**2)
    m = TRAINING_MULTIPLIER
    return ClueFlops(
        dense=m * 2.0 * shape.non_embedding_params * tokens,
        attention=m * 4.0 * shape.num_layers * shape.width * squares,
        head=m * 2.0 * shape.projection_params * 2 * n,
        logits=m * 2.0 * shape.projection_dim * batch_squares,
        tokens=tokens, examples=n,
    )


def count_encoder_parameters(encoder) -> dict[str, int]:
    """Trainable parameters of a built Keras history encoder: {"non_embedding", "embedding"}.

    Embedding = variables of ``tf.keras.layers.Embedding`` layers inside it (shared item-id /
    item-feature tables, position and time-gap tables); everything else is non-embedding.
    """
    from towers.tf_env import tf

    tables = {id(v) for m in encoder.submodules if isinstance(m, tf.keras.layers.Embedding)
              for v in m.trainable_variables}
    seen, counts = set(), {"non_embedding": 0, "embedding": 0}
    for v in encoder.trainable_variables:
        if id(v) in seen:
            continue
        seen.add(id(v))
        counts["embedding" if id(v) in tables else "non_embedding"] += int(np.prod(v.shape))
    return counts
