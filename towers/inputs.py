"""From a ``Dataset`` + split to tower inputs: training examples, tf.data pipelines, eval queries.

Raw tower inputs are dicts of arrays named and typed per the exported-tower contract
(``/work/briefs/contracts.md``)::

  item:  item_id str [B]; each item feature (categorical str [B], multi_categorical str [B, N]
         padded with "", numeric float32 [B] with NaN = missing, text str [B])
  query: user_id str [B]; each user feature (same rules); history str [B, L] item ids oldest →
         newest, right-padded with ""; history_timestamps int64 [B, L] (0 padding);
         timestamp int64 [B] (query time, seconds)

Examples. One example per *target* interaction. Its history is the user's *context* events that
come strictly before it in the order (user, timestamp, position in the events table) — so ties
in timestamp are broken by row order, as the data contract says — keeping the most recent
``max_history``. Training: events = train, every event is context and target. Held-out
(validation / test): events = context rows followed by target rows, so a target sees every
context event with timestamp <= its own and never another held-out event.

Everything is vectorised with NumPy (one lexsort + cumulative sums); examples are stored as
index arrays (``Examples``) and histories are materialised per batch inside tf.data, so memory
is O(interactions), not O(interactions × max_history).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from recdata.schema import Dataset, FeatureSpec

RESERVED_QUERY_INPUTS = ("user_id", "history", "history_timestamps", "timestamp")


# ----------------------------------------------------------------------------------------------
# pandas columns → raw feature arrays


def feature_column(df: pd.DataFrame, spec: FeatureSpec, table: str = "table") -> np.ndarray:
    """One raw feature column as the array the towers take (see module docstring for dtypes).

    Missing values (None / NaN / absent list) become "" / [] / NaN. Raises ``ValueError`` naming
    the table, column and offending value when the column cannot follow its FeatureSpec kind
    (data the user can fix: one line from the CLI, see ``core.cli``).
    """
    if spec.name not in df.columns:
        raise ValueError(
            f"{table} has no column {spec.name!r} for FeatureSpec({spec.name!r}, {spec.kind!r}); "
            f"it has {list(df.columns)}"
        )
    col = df[spec.name]
    if spec.kind in ("categorical", "text"):
        return _strings(col, f"{table}.{spec.name}")
    if spec.kind == "numeric":
        try:
            values = pd.to_numeric(col, errors="raise")
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"{table}.{spec.name} is a numeric feature but holds non-numeric values ({exc}); "
                "convert the column to float (NaN for missing) in the loader"
            ) from None
        return np.asarray(values, dtype=np.float32)
    if spec.kind == "multi_categorical":
        return _padded_lists(col, f"{table}.{spec.name}")
    raise ValueError(f"{table}.{spec.name}: unsupported feature kind {spec.kind!r}")


def _strings(col: pd.Series, where: str) -> np.ndarray:
    values = col.to_numpy(dtype=object)
    missing = pd.isna(col).to_numpy()
    out = np.empty(len(values), dtype=object)
    out[missing] = ""
    present = values[~missing]
    bad = [v for v in present[:1000] if isinstance(v, (list, tuple, np.ndarray, dict, set))]
    if bad:
        raise ValueError(
            f"{where} must hold one string per row, got {type(bad[0]).__name__} {bad[0]!r}; "
            "declare it multi_categorical or join the values in the loader"
        )
    out[~missing] = [v if isinstance(v, str) else str(v) for v in present]
    return out


def _padded_lists(col: pd.Series, where: str) -> np.ndarray:
    values = col.to_numpy(dtype=object)
    lists = []
    for v in values:  # one Python step per table row (items/users), never per interaction
        if isinstance(v, str):
            raise ValueError(
                f"{where} is multi_categorical and must hold lists of strings, got the string {v!r}; "
                "split it into a list in the loader (e.g. s.str.split('|'))"
            )
        if v is None or (isinstance(v, float) and np.isnan(v)):
            lists.append(())
        else:
            lists.append(tuple("" if pd.isna(x) else str(x) for x in v))
    return pad_string_lists(lists, width=max((len(x) for x in lists), default=0))


def pad_string_lists(lists: Sequence[Sequence[str]], width: int, keep: Literal["first", "last"] = "first"
                     ) -> np.ndarray:
    """Ragged string lists → object array [len(lists), max(width, 1)] right-padded with "".

    ``keep="last"`` keeps the last ``width`` values of longer lists (most recent history).
    """
    width = max(int(width), 1)
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    flat = np.fromiter((s for x in lists for s in x), dtype=object, count=int(lengths.sum()))
    return _pad_flat(flat, lengths, width, keep, "")


def _pad_flat(flat: np.ndarray, lengths: np.ndarray, width: int, keep: str, pad) -> np.ndarray:
    """Concatenated rows (``flat``, row ``lengths``) → [rows, width] right-padded with ``pad``."""
    offsets = np.cumsum(lengths) - lengths
    kept = np.minimum(lengths, width)
    first = offsets + (lengths - kept if keep == "last" else 0)
    cols = np.arange(width)
    valid = cols[None, :] < kept[:, None]
    idx = np.where(valid, first[:, None] + cols[None, :], 0)
    out = np.full((len(lengths), width), pad, dtype=flat.dtype if len(flat) else object)
    if len(flat):
        out[valid] = flat[idx[valid]]
    return out


def item_features_batch(items_df: pd.DataFrame, item_specs: Sequence[FeatureSpec]) -> dict[str, np.ndarray]:
    """Item tower inputs for the rows of ``items_df``: {"item_id": str [B], feature: array}."""
    out = {"item_id": _strings(_require(items_df, "item_id", "items"), "items.item_id")}
    for spec in item_specs:
        out[spec.name] = feature_column(items_df, spec, "items")
    return out


def user_features_batch(users_df: pd.DataFrame, user_specs: Sequence[FeatureSpec]) -> dict[str, np.ndarray]:
    """{"user_id": str [B], user feature: array} for the rows of ``users_df`` (no history)."""
    check_user_feature_names(user_specs)
    out = {"user_id": _strings(_require(users_df, "user_id", "users"), "users.user_id")}
    for spec in user_specs:
        out[spec.name] = feature_column(users_df, spec, "users")
    return out


def query_features_batch(users_df: pd.DataFrame, user_specs: Sequence[FeatureSpec],
                         histories: Sequence[Sequence[str]], timestamps, max_len: int,
                         history_timestamps: Sequence[Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """Query tower inputs for B queries: row b of ``users_df`` with ``histories[b]`` at ``timestamps[b]``.

    histories           B sequences of item ids, oldest → newest; the last ``max_len`` are kept
    timestamps          B query times (int seconds)
    history_timestamps  B sequences aligned with ``histories``; omitted → 0 (unknown; the bag
                        encoder ignores them, time-aware encoders need them)
    Returns the contract dict; history is [B, max(L, 1)] with L = longest kept history.
    """
    n = len(users_df)
    if len(histories) != n or len(timestamps) != n:
        raise ValueError(
            f"query_features_batch: users_df has {n} rows but got {len(histories)} histories and "
            f"{len(timestamps)} timestamps; pass one of each per user row"
        )
    if max_len <= 0:
        raise ValueError(f"query_features_batch: max_len must be > 0, got {max_len}")
    out = user_features_batch(users_df, user_specs)
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=n)
    width = int(min(lengths.max(initial=0), max_len))
    out["history"] = pad_string_lists([[str(x) for x in h] for h in histories], width, keep="last")
    if history_timestamps is None:
        out["history_timestamps"] = np.zeros(out["history"].shape, dtype=np.int64)
    else:
        ts_lengths = np.fromiter((len(h) for h in history_timestamps), dtype=np.int64, count=n)
        if len(history_timestamps) != n or not np.array_equal(ts_lengths, lengths):
            raise ValueError(
                "query_features_batch: history_timestamps must match histories row by row "
                f"(lengths differ at row {int(np.flatnonzero(ts_lengths != lengths)[0]) if len(history_timestamps) == n else 'count'})"
            )
        flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in history_timestamps]) if n else np.zeros(0, np.int64)
        out["history_timestamps"] = _pad_flat(flat, lengths, out["history"].shape[1], "last", 0).astype(np.int64)
    out["timestamp"] = np.asarray(timestamps, dtype=np.int64)
    return out


def check_user_feature_names(user_specs: Sequence[FeatureSpec]) -> None:
    clash = [s.name for s in user_specs if s.name in RESERVED_QUERY_INPUTS]
    if clash:
        raise ValueError(
            f"user feature name(s) {clash} clash with query tower inputs {list(RESERVED_QUERY_INPUTS)}; "
            "rename the column(s) in the loader"
        )


def _require(df: pd.DataFrame, col: str, table: str) -> pd.Series:
    if col not in df.columns:
        raise ValueError(f"{table} table has no {col!r} column; it has {list(df.columns)}")
    return df[col]


# ----------------------------------------------------------------------------------------------
# examples: (user, target item, history window) as index arrays


@dataclass(frozen=True)
class Examples:
    """One example per target interaction, as index arrays (n examples, m context events).

    user_rows, item_rows   int64 (n,)  rows of ``dataset.users`` / ``dataset.items``
    timestamps             int64 (n,)  the target interaction's time (= query time)
    weights                float32 (n,)
    history_start          int64 (n,)  first history event, index into the context arrays
    history_length         int64 (n,)  0..max_history events, oldest → newest
    context_item_rows      int64 (m,)  context events' item rows, sorted by (user, time, row)
    context_timestamps     int64 (m,)
    source_rows            int64 (n,)  position of the target in the events table given
    """

    user_rows: np.ndarray
    item_rows: np.ndarray
    timestamps: np.ndarray
    weights: np.ndarray
    history_start: np.ndarray
    history_length: np.ndarray
    context_item_rows: np.ndarray
    context_timestamps: np.ndarray
    source_rows: np.ndarray
    max_history: int

    def __len__(self) -> int:
        return len(self.user_rows)

    def subset(self, index: np.ndarray) -> "Examples":
        """The examples at ``index`` (positions), sharing the context arrays."""
        index = np.asarray(index, dtype=np.int64)
        return dataclasses.replace(
            self, user_rows=self.user_rows[index], item_rows=self.item_rows[index],
            timestamps=self.timestamps[index], weights=self.weights[index],
            history_start=self.history_start[index], history_length=self.history_length[index],
            source_rows=self.source_rows[index])

    def most_recent(self, window: int) -> "Examples":
        """The same examples with each history cut to its ``window`` most recent events
        (``max_history`` = window); the same as building them with ``max_history=window``."""
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        if window >= self.max_history:
            return self
        length = np.minimum(self.history_length, window)
        return dataclasses.replace(self, history_start=self.history_start + self.history_length - length,
                                   history_length=length, max_history=int(window))

    def history_item_rows(self) -> np.ndarray:
        """int64 [n, max_history] item rows of each history, oldest → newest, padded with -1."""
        return _pad_flat_windows(self.context_item_rows, self.history_start, self.history_length,
                                 self.max_history, -1)

    def history_timestamp_matrix(self) -> np.ndarray:
        """int64 [n, max_history] history timestamps, padded with 0."""
        return _pad_flat_windows(self.context_timestamps, self.history_start, self.history_length,
                                 self.max_history, 0)


def _pad_flat_windows(values: np.ndarray, start: np.ndarray, length: np.ndarray, width: int, pad) -> np.ndarray:
    cols = np.arange(width)
    valid = cols[None, :] < length[:, None]
    idx = np.where(valid, start[:, None] + cols[None, :], 0)
    out = np.full((len(start), width), pad, dtype=np.int64)
    out[valid] = values[idx[valid]]
    return out


def build_examples(dataset: Dataset, events: pd.DataFrame, is_context: np.ndarray, is_target: np.ndarray,
                   max_history: int, use_weights: bool = True) -> Examples:
    """Examples for the ``is_target`` rows of ``events``; histories from the ``is_context`` rows.

    A target's history = the same user's context events strictly before it in the stable order
    (user, timestamp, row position in ``events``), most recent ``max_history`` kept. Examples
    come out in the row order of the targets in ``events``.
    """
    if max_history <= 0:
        raise ValueError(f"max_history must be > 0, got {max_history}")
    is_context = np.asarray(is_context, dtype=bool)
    is_target = np.asarray(is_target, dtype=bool)
    n_events = len(events)
    if is_context.shape != (n_events,) or is_target.shape != (n_events,):
        raise ValueError(
            f"is_context {is_context.shape} and is_target {is_target.shape} must both be ({n_events},), "
            "one flag per events row"
        )
    users = _rows_of(dataset.users["user_id"], events["user_id"], "user_id", "users")
    items = _rows_of(dataset.items["item_id"], events["item_id"], "item_id", "items")
    ts = events["timestamp"].to_numpy()
    if not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(
            f"interactions.timestamp must be integer seconds, got dtype {ts.dtype}; "
            "convert with pd.to_datetime(...).astype('int64') // 10**9"
        )
    ts = ts.astype(np.int64)
    if use_weights and "weight" in events.columns:
        weights = events["weight"].to_numpy(dtype=np.float32)
    else:
        weights = np.ones(n_events, dtype=np.float32)

    order = np.lexsort((np.arange(n_events), ts, users))  # by user, then time, then row
    u_s, ctx_s = users[order], is_context[order]
    ctx_before = np.cumsum(ctx_s) - ctx_s                 # context events before sorted position p
    new_group = np.ones(n_events, dtype=bool)
    new_group[1:] = u_s[1:] != u_s[:-1]
    group_first = np.maximum.accumulate(np.where(new_group, np.arange(n_events), 0))
    available = ctx_before - ctx_before[group_first]      # same-user context events before p
    length = np.minimum(available, max_history)
    start = ctx_before - length

    target_pos = np.flatnonzero(is_target[order])
    target_pos = target_pos[np.argsort(order[target_pos], kind="stable")]  # back to events row order
    src = order[target_pos]
    context_pos = np.flatnonzero(ctx_s)
    return Examples(
        user_rows=users[src], item_rows=items[src], timestamps=ts[src], weights=weights[src],
        history_start=start[target_pos].astype(np.int64), history_length=length[target_pos].astype(np.int64),
        context_item_rows=items[order][context_pos], context_timestamps=ts[order][context_pos],
        source_rows=src.astype(np.int64), max_history=int(max_history),
    )


def _rows_of(table_ids: pd.Series, ids: pd.Series, col: str, table: str) -> np.ndarray:
    rows = pd.Index(table_ids).get_indexer(ids)
    if (rows < 0).any():
        bad = pd.Series(ids).to_numpy()[rows < 0][:5].tolist()
        raise ValueError(
            f"{int((rows < 0).sum())} interaction(s) name {col}s absent from the {table} table "
            f"(e.g. {bad}); add them to the {table} table or drop those interactions"
        )
    return rows.astype(np.int64)


def training_examples(dataset: Dataset, train: pd.DataFrame, max_history: int,
                      use_weights: bool = True) -> Examples:
    """One example per training interaction; history = the user's earlier training events."""
    flags = np.ones(len(train), dtype=bool)
    return build_examples(dataset, train, flags, flags, max_history, use_weights)


def heldout_examples(dataset: Dataset, context: pd.DataFrame, targets: pd.DataFrame, max_history: int,
                     use_weights: bool = True) -> Examples:
    """One example per ``targets`` row; history = the user's ``context`` events at or before it.

    Context rows precede target rows in the tie order, so a context event with the target's
    timestamp counts as history; other held-out events never do.
    """
    cols = ["user_id", "item_id", "timestamp"]
    if "weight" in context.columns and "weight" in targets.columns:
        cols.append("weight")
    events = pd.concat([context[cols], targets[cols]], ignore_index=True)
    is_context = np.arange(len(events)) < len(context)
    return build_examples(dataset, events, is_context, ~is_context, max_history, use_weights)


# ----------------------------------------------------------------------------------------------
# eval queries


@dataclass(frozen=True)
class EvalQueries:
    """Query tower inputs for test users (Q queries).

    user_ids    str (Q,)
    timestamps  int64 (Q,)  query time = the defining test event's timestamp
    test_rows   int64 (Q,)  position (0-based, not index label) of that event in ``split.test``
    features    contract dict for the query tower (history = train+valid events before the
                query time, most recent ``max_history``, oldest → newest)
    """

    user_ids: np.ndarray
    timestamps: np.ndarray
    test_rows: np.ndarray
    features: dict


def eval_queries(dataset: Dataset, split, max_history: int, per: Literal["user", "interaction"] = "user"
                 ) -> EvalQueries:
    """Queries for the test interactions of ``split`` (history from ``split.train`` + ``split.valid``).

    per="user": one query per test user at the time of that user's first test event (ties by
    row order); per="interaction": one query per test event (each sees train+valid only).
    """
    if per not in ("user", "interaction"):
        raise ValueError(f"per must be 'user' or 'interaction', got {per!r}")
    test = split.test
    if len(test) == 0:
        raise ValueError("split.test is empty: there are no test interactions to build queries for")
    if per == "user":
        tts = test["timestamp"].to_numpy(dtype=np.int64)
        order = np.lexsort((np.arange(len(test)), tts, test["user_id"].to_numpy()))
        uids = test["user_id"].to_numpy()[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = uids[1:] != uids[:-1]
        test_rows = np.sort(order[first])
    else:
        test_rows = np.arange(len(test))
    valid = getattr(split, "valid", None)
    parts = [split.train] + ([valid] if valid is not None and len(valid) else [])
    context = pd.concat([p[["user_id", "item_id", "timestamp"]] for p in parts], ignore_index=True)
    ex = heldout_examples(dataset, context, test.iloc[test_rows][["user_id", "item_id", "timestamp"]],
                          max_history, use_weights=False)
    return EvalQueries(
        user_ids=dataset.users["user_id"].to_numpy(dtype=object)[ex.user_rows],
        timestamps=ex.timestamps, test_rows=test_rows.astype(np.int64),
        features=examples_query_features(dataset, ex),
    )


def examples_query_features(dataset: Dataset, ex: Examples) -> dict[str, np.ndarray]:
    """Materialised query tower inputs (contract dict) for every example (history width = longest)."""
    users = user_features_batch(dataset.users, dataset.user_features)
    out = {k: v[ex.user_rows] for k, v in users.items()}
    width = max(int(ex.history_length.max(initial=0)), 1)
    rows = ex.history_item_rows()[:, :width]
    item_ids = dataset.items["item_id"].to_numpy(dtype=object)
    history = np.full(rows.shape, "", dtype=object)
    history[rows >= 0] = item_ids[rows[rows >= 0]]
    out["history"] = history
    out["history_timestamps"] = ex.history_timestamp_matrix()[:, :width]
    out["timestamp"] = ex.timestamps.astype(np.int64)
    return out


# ----------------------------------------------------------------------------------------------
# tf.data


def make_tf_dataset(dataset: Dataset, examples: Examples, batch_size: int, shuffle: bool, seed: int,
                    shuffle_buffer: int = 0, epochs: int | None = None, first_epoch: int = 0,
                    drop_remainder: bool = False, cache: bool = False, history_width: int | None = None):
    """tf.data.Dataset of batches {"query": {...}, "candidate": {...}, "weight": float32 [B]}.

    query / candidate follow the contract dicts (history width = the batch's longest history,
    at least 1). Feature tables are held once as tensors and gathered per batch (in parallel,
    ``AUTOTUNE``), and batches are prefetched, so the model does not wait on Python.

    epochs=None: one pass per iteration; with ``shuffle`` reshuffled every iteration from ``seed``.
    epochs=E:    ONE stream of the batches of epochs ``first_epoch .. E-1`` back to back (iterate
                 it once; Keras ``fit(steps_per_epoch=batches_per_epoch(...))``); epoch e's order is
                 a function of (seed, e) only, so a run resumed at epoch e sees the same batches
                 as an uninterrupted one. Each epoch ends with its own (maybe smaller) batch.
    shuffle_buffer  0 = a full shuffle, else a buffered one of that many examples
    drop_remainder  drop each epoch's last, smaller batch (replicas need equal splits)
    cache           keep the materialised batches after the first pass (fixed order only)
    history_width   None: each batch's history is as wide as its longest one; an int: always this
                    wide (``examples.max_history``; one shape, so Keras traces its step once)
    """
    from towers.tf_env import tf  # deferred: the pandas helpers above do not need TensorFlow

    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if history_width is not None and history_width < max(examples.max_history, 1):
        raise ValueError(f"history_width {history_width} would cut histories of up to {examples.max_history} "
                         "items; use None or >= examples.max_history")
    if len(examples) == 0:
        raise ValueError("no examples: the interactions given are empty")
    check_user_feature_names(dataset.user_features)
    items = {k: tf.constant(v) for k, v in item_features_batch(dataset.items, dataset.item_features).items()}
    users = {k: tf.constant(v) for k, v in user_features_batch(dataset.users, dataset.user_features).items()}
    item_ids = items["item_id"]
    # one dummy event so gathers stay in range when there is no context at all
    ctx_items = tf.constant(np.append(examples.context_item_rows, 0), tf.int64)
    ctx_ts = tf.constant(np.append(examples.context_timestamps, 0), tf.int64)
    user_rows = tf.constant(examples.user_rows, tf.int64)
    item_rows = tf.constant(examples.item_rows, tf.int64)
    timestamps = tf.constant(examples.timestamps, tf.int64)
    weights = tf.constant(examples.weights, tf.float32)
    h_start = tf.constant(examples.history_start, tf.int64)
    h_len = tf.constant(examples.history_length, tf.int64)

    def gather(idx):
        u = tf.gather(user_rows, idx)
        i = tf.gather(item_rows, idx)
        start, length = tf.gather(h_start, idx), tf.gather(h_len, idx)
        width = tf.maximum(tf.reduce_max(length), 1) if history_width is None else tf.constant(history_width, tf.int64)
        cols = tf.range(width, dtype=tf.int64)
        valid = cols[tf.newaxis, :] < length[:, tf.newaxis]
        pos = tf.where(valid, start[:, tf.newaxis] + cols[tf.newaxis, :], 0)
        history = tf.where(valid, tf.gather(item_ids, tf.gather(ctx_items, pos)), "")
        history_ts = tf.where(valid, tf.gather(ctx_ts, pos), tf.zeros_like(pos))
        query = {name: tf.gather(t, u) for name, t in users.items()}
        query.update(history=history, history_timestamps=history_ts, timestamp=tf.gather(timestamps, idx))
        candidate = {name: tf.gather(t, i) for name, t in items.items()}
        return {"query": query, "candidate": candidate, "weight": tf.gather(weights, idx)}

    n = len(examples)
    if cache and shuffle:
        raise ValueError("cache=True keeps the first pass's batches, which defeats shuffle=True; use one")
    if epochs is None:
        ds = tf.data.Dataset.range(n)
        if shuffle:
            buffer = n if shuffle_buffer <= 0 else min(shuffle_buffer, n)
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        if not 0 <= first_epoch <= epochs:
            raise ValueError(f"first_epoch must be in [0, epochs={epochs}], got {first_epoch}")
        ds = _epoch_stream(tf, n, batch_size, shuffle, seed, shuffle_buffer, first_epoch, epochs, drop_remainder)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    return ds.prefetch(tf.data.AUTOTUNE)


def batches_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches ``make_tf_dataset`` yields per epoch."""
    return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def _epoch_stream(tf, n, batch_size, shuffle, seed, shuffle_buffer, first_epoch, epochs, drop_remainder):
    """Batches of example indices for epochs first_epoch..epochs-1; order per epoch from (seed, e)."""
    if not shuffle:
        return tf.data.Dataset.range(first_epoch, epochs).flat_map(
            lambda e: tf.data.Dataset.range(n).batch(batch_size, drop_remainder=drop_remainder))
    if shuffle_buffer <= 0 or shuffle_buffer >= n:
        def epoch(e):  # a stateless full permutation of (seed, e)
            order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                             seed=tf.stack([tf.constant(seed, tf.int64), e]))
            return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)
        return tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch)
    parts = [tf.data.Dataset.range(n).shuffle(shuffle_buffer, seed=seed * 100_003 + e, reshuffle_each_iteration=False)
             .batch(batch_size, drop_remainder=drop_remainder) for e in range(first_epoch, epochs)]
    ds = parts[0] if parts else tf.data.Dataset.range(0).batch(batch_size)
    for part in parts[1:]:
        ds = ds.concatenate(part)
    return ds
