"""CLUE: a contrastive objective on the user encoder (Cheng et al., arXiv 2111.11294).

Two views of the same user's history are positives; the other users of the batch are negatives:

  views       ``history_views``: from each right-padded history [B, L] (oldest → newest) two
              views, "crops" (two independent random contiguous crops of ``ceil(crop · n)``
              items, n = the history length) or "windows" (the earlier ⌊n/2⌋ items and the later
              n − ⌊n/2⌋; a one-item history gives that item in both). The query time stays the
              target's time, so the time-gap embeddings see the true gaps.
  encoder     the query tower's history encoder (``QueryTower.encode_history``), not the whole
              tower: static user features are identical in both views and would make the task
              trivial without training the sequence encoder.
  projection  a two-layer MLP head → L2 normalisation (used only by this loss, as in SimCLR).
  loss        ``info_nce``: symmetric InfoNCE with temperature τ over the [B, B] cosine matrix;
              other examples of the SAME user are removed from the negatives (the training
              stream holds many prefixes of one user's history).

``clue: pretrain`` runs ``CluePretrainer`` (this loss alone) for ``clue_epochs`` before the
retrieval epochs; ``clue: joint`` adds ``ClueObjective`` (already weighted) to the retrieval loss.
"""
from __future__ import annotations

from towers.tf_env import tf

_ID_HASH_BUCKETS = 2**63 - 1


def info_nce(a: tf.Tensor, b: tf.Tensor, temperature: float, groups: tf.Tensor | None = None) -> tf.Tensor:
    """Symmetric InfoNCE of paired views a, b float32 [B, d] (rows L2-normalised) → scalar.

    S = a bᵀ / τ. loss = ½ (mean_i CE(S[i, :], i) + mean_i CE(S[:, i], i)). With ``groups``
    (int64 [B], e.g. hashed user ids), S[i, j] for j ≠ i with groups[j] == groups[i] is removed
    from both softmaxes (a same-user pair is not a negative).
    """
    logits = tf.matmul(a, b, transpose_b=True) / temperature
    if groups is not None:
        same = tf.equal(groups[:, tf.newaxis], groups[tf.newaxis, :])
        off_diagonal = tf.logical_not(tf.cast(tf.eye(tf.shape(a)[0]), tf.bool))
        logits = tf.where(tf.logical_and(same, off_diagonal), tf.constant(-1e9, logits.dtype), logits)
    labels = tf.range(tf.shape(a)[0])
    rows = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    cols = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.transpose(logits))
    return 0.5 * (tf.reduce_mean(rows) + tf.reduce_mean(cols))


def _take_window(history, history_timestamps, start, length):
    """Per row, the ``length`` items from ``start`` (int64 [B] each) → right-padded [B, L]."""
    cols = tf.range(tf.shape(history, out_type=tf.int64)[1], dtype=tf.int64)[tf.newaxis, :]
    keep = cols < length[:, tf.newaxis]
    pos = tf.where(keep, start[:, tf.newaxis] + cols, 0)
    return (tf.where(keep, tf.gather(history, pos, batch_dims=1), ""),
            tf.where(keep, tf.gather(history_timestamps, pos, batch_dims=1), tf.zeros_like(pos)))


def history_views(history: tf.Tensor, history_timestamps: tf.Tensor, mode: str = "crops", crop: float = 0.6,
                  seed: int | None = None):
    """Two views of right-padded histories (str [B, L], int64 [B, L]) → ((h1, t1), (h2, t2)), each [B, L].

    See the module docstring for "crops" / "windows". Empty histories give empty views.
    """
    history_timestamps = tf.cast(history_timestamps, tf.int64)
    n = tf.reduce_sum(tf.cast(history != "", tf.int64), axis=1)  # right-padded: valid = first n
    if mode == "windows":
        one = tf.equal(n, 1)
        split = tf.where(one, tf.zeros_like(n), n // 2)  # where the later window starts
        earlier = _take_window(history, history_timestamps, tf.zeros_like(n), tf.where(one, n, split))
        later = _take_window(history, history_timestamps, split, n - split)
        return earlier, later
    if mode != "crops":
        raise ValueError(f"mode must be 'crops' or 'windows', got {mode!r}")
    if not 0.0 < crop <= 1.0:
        raise ValueError(f"crop must be in (0, 1], got {crop!r}")
    size = tf.minimum(tf.cast(tf.math.ceil(crop * tf.cast(n, tf.float32)), tf.int64), n)
    slack = tf.cast(n - size + 1, tf.float32)  # possible starts
    views = []
    for k in range(2):
        u = tf.random.uniform(tf.shape(n), seed=None if seed is None else seed + k)
        start = tf.minimum(tf.cast(tf.floor(u * slack), tf.int64), n - size)
        views.append(_take_window(history, history_timestamps, start, size))
    return views[0], views[1]


class ClueObjective(tf.keras.layers.Layer):
    """batch {"query": contract dict, ...} → scalar ``weight`` · InfoNCE of two history views.

    query_tower     a ``towers.query_tower.QueryTower`` with a history encoder (shared, trained)
    """

    def __init__(self, query_tower, projection_dim: int, temperature: float, weight: float = 1.0,
                 views: str = "crops", crop: float = 0.6, **kwargs):
        kwargs.setdefault("name", "clue_loss")
        super().__init__(**kwargs)
        if query_tower.history_encoder is None:
            raise ValueError("CLUE needs a query tower with a history encoder; tower.user_encoder is 'ids'")
        if views not in ("crops", "windows"):
            raise ValueError(f"views must be 'crops' or 'windows', got {views!r}")
        self.query_tower = query_tower
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.views = views
        self.crop = float(crop)
        self.projection = tf.keras.Sequential([
            tf.keras.layers.Dense(projection_dim, activation="relu", name="clue_hidden"),
            tf.keras.layers.Dense(projection_dim, name="clue_out")], name="clue_projection")
        # built now so its variables exist before the first training step (optimizer slots, checkpoints)
        self.projection.build((None, int(query_tower.history_encoder.output_dim)))

    def project(self, query: dict, history, history_timestamps, training=False) -> tf.Tensor:
        encoded = self.query_tower.encode_history({**query, "history": history,
                                                   "history_timestamps": history_timestamps}, training=training)
        return tf.math.l2_normalize(self.projection(encoded), axis=-1)

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: skip AST conversion
    def call(self, inputs, training=False):
        query = inputs["query"]
        (h1, t1), (h2, t2) = history_views(query["history"], query["history_timestamps"], self.views, self.crop)
        a = self.project(query, h1, t1, training=training)
        b = self.project(query, h2, t2, training=training)
        groups = tf.strings.to_hash_bucket_fast(query["user_id"], _ID_HASH_BUCKETS)
        return self.weight * info_nce(a, b, self.temperature, groups)


class CluePretrainer(tf.keras.Model):
    """Keras model whose ``fit`` minimises ``objective`` alone (CLUE pretraining); reports "clue_loss".

    Only the objective's variables are trained: the history encoder (and the shared item-id
    table / item feature tables it reads) and the projection head.
    """

    def __init__(self, objective: ClueObjective, **kwargs):
        super().__init__(**kwargs)
        self.objective = objective
        self.loss_tracker = tf.keras.metrics.Mean(name="clue_loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    @tf.autograph.experimental.do_not_convert
    def train_step(self, inputs):
        with tf.GradientTape() as tape:
            loss = self.objective(inputs, training=True)
            # replicas' gradients are summed: each contributes 1/replicas of the global mean
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.objective.trainable_variables
        pairs = [(g, v) for g, v in zip(tape.gradient(scaled, variables), variables) if g is not None]
        self.optimizer.apply_gradients(pairs)  # user-feature / head variables get no gradient here
        self.loss_tracker.update_state(loss)
        return {"clue_loss": self.loss_tracker.result()}

    def test_step(self, inputs):
        self.loss_tracker.update_state(self.objective(inputs, training=False))
        return {"clue_loss": self.loss_tracker.result()}
