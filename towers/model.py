"""The two-tower retrieval model: in-batch softmax over cosine / temperature (TFRS), with the
sampling-bias (logQ) correction, mixed negative sampling and the feature-masking SSL regulariser.

Retrieval loss. For a batch of B (query, positive item) pairs with L2-normalised tower outputs
q_b, c_b, plus (MNS) B′ items drawn uniformly from the corpus appended as candidates c_{B+1..B+B′},
the loss of example b is the softmax cross-entropy of row b of

    S[b, j] = q_b · c_j / τ − log q(c_j)        [B, B + B′], label b

where the correction term is present only with ``loss.logq`` on: q(c) = p(c) (per-draw training
frequency: ``towers.frequency``, from counts or the streaming estimator, which is updated with the
batch's positives at every training step before it is read) or, with MNS, the mixed-pool
probability (B·p(c) + B′/N) / (B + B′). Candidates sharing the positive's item id (in batch or
MNS) are removed from the softmax ("accidental hits"); ``loss.hard_negatives`` = k keeps the k
highest-scoring negatives per row. The batch loss is the (weighted) sum over examples / B. Each
part is a named unit of ``towers.loss`` (logQ correction, accidental hits, mixed-pool probability,
hard negatives), composed by ``towers.loss.RetrievalLoss``.

Total = retrieval_weight · retrieval + Σ α·SSL (item side, query side) + Σ auxiliary + Keras
regularisation losses. Reported metrics (epoch means, weighted by batch size): "loss" (retrieval
only, comparable across variants), "regularization_loss", "ssl_item_loss" / "ssl_query_loss"
(unweighted SSL losses, when on), and each auxiliary layer's value under its ``name``.

Constructor (what ``towers.train`` passes; ``TwoTowerModel.from_training_data`` computes the
statistics from a Dataset and its training interactions):

  query_tower, item_tower   the towers; both take ``call(inputs, training=, feature_mask=)`` and
                            expose ``feature_names`` / ``feature_specs``
  temperature               τ of the retrieval softmax (> 0)
  loss                      ``RetrievalLossConfig`` (default: plain in-batch softmax, hits removed)
  ssl                       ``SSLConfig`` (default: off)
  corpus                    raw item-tower inputs of the whole catalogue,
                            ``towers.inputs.item_features_batch(dataset.items, item_tower.feature_specs)``;
                            needed for MNS, item-side SSL and logq "counts"
  item_counts               int (N,) training interactions per corpus row; needed for logq "counts"
  item_correlation          ``FeatureCorrelation`` over ``item_tower.feature_names`` (ssl "cfm")
  query_correlation         ``FeatureCorrelation`` over ``query_tower.feature_names`` (ssl "cfm" +
                            query_side)
  seed                      seeds every draw (MNS, SSL batches and views); stateless per step, so
                            a resumed run draws the same
  auxiliary_losses          Keras layers ``aux(inputs, training=) -> scalar`` (already weighted), e.g.
                            the CLUE objective; added to the total and reported under ``aux.name``
  retrieval_weight          multiplies the retrieval loss; 0 skips computing it (aux-only pretraining)

With every option off, a step is the same computation as the plain in-batch softmax.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from towers.feature_masking import FeatureCorrelation, TwoViewAugmenter, feature_correlation
from towers.frequency import CountFrequency, StreamingFrequencyEstimator
from towers.loss import RetrievalLoss, item_fingerprints, mixed_sampling_probability
from towers.negatives import STREAM_MNS, ItemCorpus, step_seed
from towers.objectives import RetrievalLossConfig, SSLConfig
from towers.ssl import ItemSSL, QuerySSL
from towers.tf_env import tf, tfrs


class TwoTowerModel(tfrs.Model):
    """``compute_loss`` takes a batch {"query": dict, "candidate": dict, "weight": [B] (optional)}
    as produced by ``towers.inputs.make_tf_dataset``; the candidate dict must hold "item_id".
    See the module docstring for the loss and the constructor arguments.
    """

    def __init__(self, query_tower: tf.keras.Model, item_tower: tf.keras.Model, temperature: float,
                 remove_accidental_hits: bool | None = None, *, loss: RetrievalLossConfig | None = None,
                 ssl: SSLConfig | None = None, corpus: Mapping[str, np.ndarray] | None = None,
                 item_counts: np.ndarray | None = None, item_correlation: FeatureCorrelation | None = None,
                 query_correlation: FeatureCorrelation | None = None, seed: int = 0,
                 auxiliary_losses: Sequence[tf.keras.layers.Layer] = (), retrieval_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if retrieval_weight < 0:
            raise ValueError(f"retrieval_weight must be >= 0, got {retrieval_weight}")
        loss = loss if loss is not None else RetrievalLossConfig()
        if remove_accidental_hits is not None:  # positional form of older callers
            loss = RetrievalLossConfig(**{**loss.__dict__, "remove_accidental_hits": bool(remove_accidental_hits)})
        ssl = ssl if ssl is not None else SSLConfig()
        if not isinstance(loss, RetrievalLossConfig) or not isinstance(ssl, SSLConfig):
            raise TypeError(f"loss must be a RetrievalLossConfig and ssl an SSLConfig (towers.objectives), got "
                            f"{type(loss).__name__} and {type(ssl).__name__}")
        self.query_tower = query_tower
        self.item_tower = item_tower
        self.temperature = float(temperature)
        self.loss_config = loss
        self.ssl_config = ssl
        self.seed = int(seed)
        self.retrieval_weight = float(retrieval_weight)
        self.retrieval = RetrievalLoss(temperature, remove_hits=loss.remove_accidental_hits,
                                       hard_negatives=loss.hard_negatives, name="retrieval_loss")

        needs_corpus = [why for why, on in (("loss.mns_negatives > 0", loss.mns_negatives > 0),
                                            ("loss.logq 'counts'", loss.logq == "counts"),
                                            ("ssl (item side)", ssl.enabled)) if on]
        if needs_corpus and corpus is None:
            raise ValueError(f"{', '.join(needs_corpus)} need(s) the item corpus: pass corpus="
                             "towers.inputs.item_features_batch(dataset.items, item_tower.feature_specs)")
        self.corpus = ItemCorpus(corpus) if needs_corpus else None

        self.frequency = None
        if loss.logq == "streaming":
            self.frequency = StreamingFrequencyEstimator(loss.frequency_buckets, loss.frequency_alpha,
                                                         name="item_frequency")
        elif loss.logq == "counts":
            if item_counts is None or len(item_counts) != self.corpus.size:
                got = "None" if item_counts is None else f"{len(item_counts)} counts"
                raise ValueError(f"loss.logq 'counts' needs item_counts, one training count per corpus row "
                                 f"({self.corpus.size}), got {got}")
            self.frequency = CountFrequency(np.asarray(corpus["item_id"]), item_counts, name="item_frequency")

        self.item_ssl = self.query_ssl = None
        if ssl.enabled:
            self.item_ssl = ItemSSL(item_tower, self.corpus, self._augmenter(item_tower, item_correlation, "item"),
                                    ssl.item_batch_size, ssl.temperature, self.seed, name="item_ssl")
            if ssl.query_side:
                augmenter = self._augmenter(query_tower, query_correlation, "query", ssl.sequence_dropout)
                self.query_ssl = QuerySSL(query_tower, augmenter, ssl.temperature, self.seed,
                                          batch_size=ssl.query_batch_size, name="query_ssl")
        # counts draws of MNS / SSL: stateless seeds (seed, step), checkpointed with the model
        self.sample_step = self.add_weight(name="sample_step", shape=(), dtype=tf.int64, initializer="zeros",
                                           trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

        self.auxiliary_losses = list(auxiliary_losses)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.regularization_tracker = tf.keras.metrics.Mean(name="regularization_loss")
        self.ssl_item_tracker = tf.keras.metrics.Mean(name="ssl_item_loss") if self.item_ssl else None
        self.ssl_query_tracker = tf.keras.metrics.Mean(name="ssl_query_loss") if self.query_ssl else None
        self.auxiliary_trackers = [tf.keras.metrics.Mean(name=aux.name) for aux in self.auxiliary_losses]

    def _augmenter(self, tower, correlation, side: str, sequence_dropout: float = 0.0) -> TwoViewAugmenter:
        cfg = self.ssl_config
        if cfg.mode == "cfm" and correlation is None:
            raise ValueError(f"ssl mode 'cfm' needs {side}_correlation, the MI table over {side}_tower.feature_names "
                             "(towers.feature_masking.feature_correlation, or TwoTowerModel.from_training_data)")
        return TwoViewAugmenter(tower.feature_names, tower.feature_specs, cfg.mode, correlation, cfg.cfm_k,
                                cfg.mask_ids, cfg.multi_value_dropout, sequence_dropout)

    @classmethod
    def from_training_data(cls, query_tower, item_tower, temperature: float, dataset, train, *,
                           loss: RetrievalLossConfig | None = None, ssl: SSLConfig | None = None, seed: int = 0,
                           **kwargs) -> "TwoTowerModel":
        """Build with the statistics the options need, computed from ``dataset`` (recdata Dataset)
        and its training interactions ``train`` (DataFrame with item_id, user_id): the corpus,
        item counts and MI tables (only those the configs use). ``kwargs`` go to the constructor."""
        from towers.inputs import item_features_batch, user_features_batch

        loss = loss if loss is not None else RetrievalLossConfig()
        ssl = ssl if ssl is not None else SSLConfig()
        stats = {}
        if loss.mns_negatives or loss.logq == "counts" or ssl.enabled:
            stats["corpus"] = item_features_batch(dataset.items, item_tower.feature_specs)
            stats["item_counts"] = _row_counts(dataset.items["item_id"], train["item_id"])
        if ssl.enabled and ssl.mode == "cfm":
            stats["item_correlation"] = feature_correlation(stats["corpus"], item_tower.feature_specs,
                                                            item_tower.feature_names, stats["item_counts"])
            if ssl.query_side:
                users = user_features_batch(dataset.users, query_tower.feature_specs)
                stats["query_correlation"] = feature_correlation(
                    users, query_tower.feature_specs, query_tower.feature_names,
                    _row_counts(dataset.users["user_id"], train["user_id"]))
        return cls(query_tower, item_tower, temperature, loss=loss, ssl=ssl, seed=seed, **stats, **kwargs)

    @property
    def training_history_window(self) -> int | None:
        """How many of the most recent history entries a training / validation step reads, or None
        (all of them): the query tower's window, unless query-side SSL (its history-element dropout
        changes which entries are the most recent) or an auxiliary loss (CLUE crops the whole
        history) reads the history too. Batches may carry only that window (``towers.train``)."""
        if self.query_ssl is not None or self.auxiliary_losses:
            return None
        return getattr(self.query_tower, "history_window", None)

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.regularization_tracker, self.ssl_item_tracker, self.ssl_query_tracker]
        return [t for t in trackers if t is not None] + self.auxiliary_trackers

    # -- losses --------------------------------------------------------------------------------

    def retrieval_loss(self, inputs, training: bool = False, step=None) -> tf.Tensor:
        """The corrected in-batch (+ MNS) softmax loss of a batch (module docstring); float32 scalar."""
        cfg = self.loss_config
        query = self.query_tower(inputs["query"], training=training)
        candidate = self.item_tower(inputs["candidate"], training=training)
        item_ids = inputs["candidate"]["item_id"]
        batch = tf.shape(item_ids)[0]
        extra_ids = None
        if cfg.mns_negatives:
            step = self.sample_step if step is None else step
            rows = self.corpus.uniform_rows(cfg.mns_negatives, step_seed(self.seed, step, STREAM_MNS))
            extra = self.corpus.gather(rows)
            extra_ids = extra["item_id"]
            candidate = tf.concat([candidate, self.item_tower(extra, training=training)], axis=0)
        all_ids = item_ids if extra_ids is None else tf.concat([item_ids, extra_ids], axis=0)
        probability = None
        if self.frequency is not None:
            if training:
                self.frequency.update(item_ids)  # the batch's positives: the training stream
            probability = self.frequency.probability(all_ids, batch)
            if cfg.mns_negatives:
                probability = mixed_sampling_probability(probability, batch, cfg.mns_negatives, self.corpus.size)
        candidate_ids = item_fingerprints(all_ids) if cfg.remove_accidental_hits else None
        return self.retrieval(query, candidate, sample_weight=inputs.get("weight"),
                              sampling_probability=probability, candidate_ids=candidate_ids)

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        """The retrieval loss alone (unweighted), as TFRS' ``Model.compute_loss`` contract says."""
        return self.retrieval_loss(inputs, training=training)

    def _loss_terms(self, inputs, training: bool) -> dict:
        step = self.sample_step.assign_add(1)
        terms = {}
        if self.retrieval_weight > 0:
            terms["loss"] = self.retrieval_loss(inputs, training=training, step=step)
        if self.item_ssl is not None:
            terms["ssl_item_loss"] = self.item_ssl(step, training=training)
        if self.query_ssl is not None:
            terms["ssl_query_loss"] = self.query_ssl(inputs["query"], step, training=training)
        for aux in self.auxiliary_losses:
            terms[aux.name] = aux(inputs, training=training)
        terms["regularization_loss"] = (tf.add_n([tf.reduce_sum(x) for x in self.losses]) if self.losses
                                        else tf.constant(0.0))
        return terms

    def _total(self, terms: dict) -> tf.Tensor:
        """The loss to differentiate. Every term is a mean over this replica's examples; with R
        replicas it is divided by R, so the gradients Keras sums over replicas are those of the
        global-batch mean (batches split evenly)."""
        total = terms["regularization_loss"]
        if "loss" in terms:
            total += self.retrieval_weight * terms["loss"] if self.retrieval_weight != 1.0 else terms["loss"]
        for name in ("ssl_item_loss", "ssl_query_loss"):
            if name in terms:
                total += self.ssl_config.weight * terms[name]
        for aux in self.auxiliary_losses:
            total += terms[aux.name]
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        return total / replicas if replicas > 1 else total

    def _update_loss_metrics(self, inputs, terms: dict) -> dict:
        batch = tf.cast(tf.shape(inputs["candidate"]["item_id"])[0], tf.float32)
        trackers = {t.name: t for t in self.metrics}
        for name, value in terms.items():
            trackers[name].update_state(value, sample_weight=batch)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, inputs):
        """One optimizer step on the total loss (module docstring); reports epoch-mean losses."""
        with tf.GradientTape() as tape:
            terms = self._loss_terms(inputs, training=True)
            total = self._total(terms)
        gradients = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._update_loss_metrics(inputs, terms)

    def test_step(self, inputs):
        return self._update_loss_metrics(inputs, self._loss_terms(inputs, training=False))


def _row_counts(table_ids, event_ids) -> np.ndarray:
    """int64 (N,): how many of ``event_ids`` equal each of ``table_ids`` (ids not in the table are ignored)."""
    import pandas as pd

    counts = pd.Series(np.asarray(event_ids, dtype=object)).value_counts()
    return pd.Series(np.asarray(table_ids, dtype=object)).map(counts).fillna(0).to_numpy(np.int64)
