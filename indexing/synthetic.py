"""Structured synthetic embeddings for index tests and benchmarks (not uniform noise).

Real two-tower item embeddings are anisotropic (a few directions carry most variance), clustered by
topic, with cluster sizes following popularity (a few huge clusters, a long tail of small ones), and
queries fall near the same clusters without being copies of items. ``clustered_vectors`` draws that:

  spectrum   per-dimension scale s_j = (1 + j)^-decay, j = 0..d-1 (decay 0.5 by default)
  centres    c ~ N(0, diag(s^2)), n_clusters of them
  sizes      cluster weight proportional to rank^-zipf (zipf 0.8): popular topics are big
  points     x = c + noise * e, e ~ N(0, diag(s^2)), then L2-normalised
  queries    the same process with fresh noise (not item vectors), L2-normalised

Everything is float32 and determined by ``seed``.
"""
from __future__ import annotations

import numpy as np


def clustered_vectors(n_items: int, dim: int, n_queries: int = 0, *, n_clusters: int | None = None,
                      noise: float = 0.8, decay: float = 0.5, zipf: float = 0.8, seed: int = 0,
                      chunk: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """(items float32 (n_items, dim), queries float32 (n_queries, dim)), rows L2-normalised.

    n_clusters defaults to ~sqrt(n_items) (at least 8). ``noise`` is the within-cluster spread relative to
    the spread of the centres: 0.8 gives overlapping clusters, so nearest neighbours cross cluster borders.
    """
    if n_items < 1 or dim < 1 or n_queries < 0:
        raise ValueError(f"need n_items >= 1, dim >= 1, n_queries >= 0; got {n_items}, {dim}, {n_queries}")
    rng = np.random.default_rng(seed)
    clusters = n_clusters or max(8, int(np.sqrt(n_items)))
    scale = (1.0 + np.arange(dim)) ** -decay
    centres = rng.standard_normal((clusters, dim)) * scale
    weights = (1.0 + np.arange(clusters)) ** -zipf
    weights /= weights.sum()
    rng.shuffle(centres)  # popularity is unrelated to position in space

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, chunk):
            m = min(chunk, count - start)
            which = rng.choice(clusters, size=m, p=weights)
            x = centres[which] + noise * rng.standard_normal((m, dim)) * scale
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[start:start + m] = x
        return out

    return draw(n_items), draw(n_queries)
