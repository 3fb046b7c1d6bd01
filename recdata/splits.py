"""Train / valid / test splits of an interactions table, and popularity slices of the catalogue.

``leave_last_out``: per user, order events by (timestamp, source row); the last is the test event,
the one before it the validation event, the rest train. Users with few events:

  1 event   → train only (no history to query with, so no test case)
  2 events  → 1 train, 1 test, no validation event
  ≥ 3       → ≥ 1 train, 1 valid, 1 test

``temporal``: one global time cut (``train_end``, optionally ``valid_end``): train = t < train_end,
valid = train_end ≤ t < valid_end, test = t ≥ valid_end (or ≥ train_end without ``valid_end``).
A user may have several test events; users and items first seen after the cut are kept (cold start).

Every part keeps the columns and the source row order of the input (index reset to 0..n-1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recdata.schema import INTERACTION_COLUMNS


TRAIN, VALID, TEST = 0, 1, 2


@dataclass
class Split:
    """Three interaction tables with the columns of the source table, each in source row order.

    ``part`` (int8, one per source row: 0 train, 1 valid, 2 test) says where each source row went;
    the split functions set it, ``recdata.loading.save_split`` uses it to restore the source order.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    kind: str = ""
    part: np.ndarray | None = None

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def _check(interactions: pd.DataFrame) -> None:
    missing = [c for c in INTERACTION_COLUMNS if c not in interactions.columns]
    if missing:
        raise ValueError(f"interactions are missing column(s) {missing}; they have {list(interactions.columns)}. "
                         "Load them through recdata (which names the columns) before splitting")
    if len(interactions) == 0:
        raise ValueError("interactions table is empty; there is nothing to split")
    if not np.issubdtype(interactions["timestamp"].dtype, np.integer):
        raise ValueError(f"interactions.timestamp must be int64 seconds, got dtype {interactions['timestamp'].dtype}; "
                         "run Dataset.validate() to find the problem")


def _parts(interactions: pd.DataFrame, part: np.ndarray, kind: str) -> Split:
    """``part``: int8 per row, TRAIN / VALID / TEST."""
    def take(k):
        return interactions.loc[part == k].reset_index(drop=True)
    return Split(train=take(TRAIN), valid=take(VALID), test=take(TEST), kind=kind, part=part)


def leave_last_out(interactions: pd.DataFrame) -> Split:
    """Per user: last event (by timestamp, then source row) → test, the one before → valid, rest → train."""
    _check(interactions)
    n = len(interactions)
    user_code = pd.factorize(interactions["user_id"])[0]
    ts = interactions["timestamp"].to_numpy()
    order = np.lexsort((np.arange(n), ts, user_code))          # by user, then time, then source row
    u_sorted = user_code[order]
    counts = np.bincount(user_code)
    end = np.cumsum(counts)                                     # one past each user's last sorted position
    from_end = end[u_sorted] - 1 - np.arange(n)                 # 0 = the user's last event
    n_user = counts[u_sorted]
    part_sorted = np.zeros(n, dtype=np.int8)
    part_sorted[(from_end == 0) & (n_user >= 2)] = TEST
    part_sorted[(from_end == 1) & (n_user >= 3)] = VALID
    part = np.empty(n, dtype=np.int8)
    part[order] = part_sorted
    return _parts(interactions, part, "leave-last-out")


def temporal(interactions: pd.DataFrame, train_end: int, valid_end: int | None = None) -> Split:
    """Global time cut(s) in timestamp seconds; see the module docstring."""
    _check(interactions)
    ts = interactions["timestamp"].to_numpy()
    lo, hi = int(ts.min()), int(ts.max())
    if valid_end is not None and valid_end < train_end:
        raise ValueError(f"temporal split: valid_end={valid_end} is before train_end={train_end}; "
                         "it must be >= train_end")
    test_start = train_end if valid_end is None else valid_end
    part = np.full(len(ts), TRAIN, dtype=np.int8)
    part[ts >= train_end] = VALID
    part[ts >= test_start] = TEST
    n_train, n_test = int((part == TRAIN).sum()), int((part == TEST).sum())
    if n_train == 0 or n_test == 0:
        raise ValueError(
            f"temporal split with train_end={train_end}, valid_end={valid_end} leaves {n_train} train and "
            f"{n_test} test events; the data spans timestamps {lo}..{hi}. Choose cuts inside that range "
            "(temporal_cuts(interactions, valid_fraction, test_fraction) picks them by quantile)"
        )
    return _parts(interactions, part, "temporal")


def temporal_cuts(interactions: pd.DataFrame, valid_fraction: float = 0.1,
                  test_fraction: float = 0.1) -> tuple[int, int]:
    """(train_end, valid_end) so that about the given fractions of events fall in valid and test.

    Cuts are timestamps from the data (events at the cut time go to the later part).
    """
    _check(interactions)
    if not (0 < test_fraction < 1 and 0 <= valid_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ValueError(f"temporal fractions valid={valid_fraction}, test={test_fraction} must be in [0, 1) "
                         "with test > 0 and valid + test < 1")
    ts = np.sort(interactions["timestamp"].to_numpy())
    n = len(ts)
    valid_end = int(ts[min(n - 1, int(np.floor(n * (1 - test_fraction))))])
    train_end = int(ts[min(n - 1, int(np.floor(n * (1 - test_fraction - valid_fraction))))])
    return train_end, valid_end


def train_counts(split: Split, item_ids) -> np.ndarray:
    """Training events per item, int64 (n,), aligned with ``item_ids`` (the catalogue order).

    Train events on items not in ``item_ids`` are ignored.
    """
    index = pd.Index(pd.Series(item_ids, dtype="str"))
    if not index.is_unique:
        raise ValueError("train_counts: item_ids hold duplicates; pass the catalogue's unique item ids")
    rows = index.get_indexer(split.train["item_id"])
    return np.bincount(rows[rows >= 0], minlength=len(index)).astype(np.int64)


def summarize(split: Split, item_ids, head) -> dict:
    """Counts per part and per popularity slice; ``head`` is bool (n,) over ``item_ids``.

    The head/tail rule itself lives in one place, ``eval.slices.popularity_tiers`` (the data stage
    only counts what falls on each side of it).

    Returns {"parts": {part: {"interactions", "users", "items"}},
             "slices": {"head"|"tail": {"items", "train_interactions", "test_cases", "test_users"}}}.
    """
    counts = train_counts(split, item_ids)
    head = np.asarray(head, dtype=bool)
    if head.shape != counts.shape:
        raise ValueError(f"head must be bool with one entry per item, shape {counts.shape}; got {head.shape}")
    index = pd.Index(pd.Series(item_ids, dtype="str"))
    out: dict = {"parts": {}, "slices": {}}
    for name in ("train", "valid", "test"):
        df = getattr(split, name)
        out["parts"][name] = {"interactions": len(df), "users": int(df["user_id"].nunique()),
                              "items": int(df["item_id"].nunique())}
    test_rows = index.get_indexer(split.test["item_id"])
    known = test_rows >= 0
    for label, mask in (("head", head), ("tail", ~head)):
        in_slice = np.zeros(len(test_rows), dtype=bool)
        in_slice[known] = mask[test_rows[known]]
        out["slices"][label] = {
            "items": int(mask.sum()),
            "train_interactions": int(counts[mask].sum()),
            "test_cases": int(in_slice.sum()),
            "test_users": int(split.test.loc[in_slice, "user_id"].nunique()),
        }
    return out
