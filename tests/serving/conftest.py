"""A tiny real run directory for the serving tests, built once per test process.

``tiny_run()`` trains the towers on small synthetic data with the pipeline's own stages (data → train),
embeds the items in-process with the exported item tower, writes the vectors artifact and publishes a Flat
index (``pipeline.stage_index``): the layout ``twotower demo`` produces, without Beam, in ~15 s.
Tests that change the run (publish indices, edit versions) work on ``copy_run(tmp_path)``.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.rundir import RunDir

TINY = [
    "name=tiny", "data.source=synthetic",
    "data.synthetic.num_users=300", "data.synthetic.num_items=200", "data.synthetic.num_interactions=6000",
    "train.epochs=1", "train.batch_size=512", "train.monitor_recall_k=0", "train.keep_checkpoints=0", "train.verbose=0", "train.tensorboard=false",
    "train.tower.output_dim=16", "train.tower.id_embedding_dim=16", "train.tower.feature_embedding_dim=8",
    "train.tower.hidden_units=[32]", "train.tower.max_history=20",
    "index.factory=Flat", "index.recall_queries=100",
]


@lru_cache(maxsize=1)
def tiny_run() -> RunDir:
    """The shared tiny run (do not modify it; use ``copy_run``)."""
    from twotower import pipeline
    from twotower import DEFAULT_CONFIG
    from twotower.config import load_config

    base = Path(tempfile.mkdtemp(prefix="serving-tiny-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    root = base / "tiny"
    cfg = load_config(DEFAULT_CONFIG, TINY)
    run = RunDir(root)
    pipeline.init_run(cfg, run)
    dataset, split = pipeline.stage_data(cfg, run)
    pipeline.stage_train(cfg, run, dataset, split)
    embed_items(run, "v1")
    pipeline.stage_index(cfg, run)
    return run


def embed_items(run: RunDir, version: str) -> tuple[np.ndarray, np.ndarray]:
    """Embed every item with the run's item tower → ``vectors/<version>`` (published); returns (ids, vectors)."""
    from indexing.vectors import write_vectors
    from recdata.loading import load_split
    from towers.export import load_tower
    from towers.inputs import item_features_batch
    from core import artifacts
    from core import lifecycle

    dataset, _ = load_split(run.data)
    tower = load_tower(run.item_tower)
    features = item_features_batch(dataset.items, dataset.item_features)
    vectors = tower(features)
    ids = features["item_id"]
    write_vectors(run.vectors / version, ids, vectors, tower.model_version, num_shards=2)
    lifecycle.VersionedRoot(run.vectors).publish(version)
    return ids, vectors


def copy_run(tmp_path: Path) -> RunDir:
    """A private copy of the tiny run under ``tmp_path``."""
    target = Path(tmp_path) / "run"
    shutil.copytree(tiny_run().root, target)
    return RunDir(target)


def publish_index(run: RunDir, model_version: str | None = None, perturb: float = 0.0, seed: int = 0,
                  factory: str = "Flat") -> str:
    """Build and publish a new index version from the run's current vectors; returns its version name.

    model_version  stamp another version into it (to test refusals); default the run's model version
    perturb        add this much seeded noise to the vectors (re-normalised) so results differ visibly
    """
    from indexing.item_index import ItemIndex
    from indexing.spec import IndexSpec
    from indexing.store import publish_index as publish
    from indexing.vectors import read_vectors
    from core import artifacts
    from core import lifecycle

    ids, vectors, manifest = read_vectors(lifecycle.current_dir(run.vectors))
    if perturb:
        rng = np.random.default_rng(seed)
        vectors = vectors + perturb * rng.standard_normal(vectors.shape).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex.build(vectors, ids, IndexSpec(factory=factory, recall_queries=50),
                            model_version or manifest["model_version"])
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{seed}-{time.perf_counter_ns() % 10**6:06d}"
    publish(run.index, index, version, keep=10)
    return version


class Reference:
    """The slow obvious answer: towers.inputs.query_features_batch → query tower → ItemIndex.search.

    Built from the run's files independently of serving/: a known user's history is the user's
    interactions stably sorted by timestamp (source order breaks ties), the last max_history of them;
    seen items are all of them.
    """

    def __init__(self, run: RunDir):
        from indexing.store import load_current
        from recdata.loading import load_split
        from towers.export import load_tower
        from core import artifacts
        from core import lifecycle

        self.dataset, _ = load_split(run.data)
        self.tower = load_tower(run.query_tower)
        self.index = load_current(run.index)
        self.max_history = int(artifacts.read_manifest(run.model)["max_history"])

    def known(self, user_id: str, k: int, timestamp: int, exclude_seen: bool = True):
        inter = self.dataset.interactions
        mine = inter[inter["user_id"] == user_id].sort_values("timestamp", kind="stable")
        users = self.dataset.users[self.dataset.users["user_id"] == user_id]
        assert len(users) == 1, user_id
        hist = mine["item_id"].tolist()[-self.max_history:]
        hist_ts = mine["timestamp"].tolist()[-self.max_history:]
        return self._search(users, [hist], [hist_ts], timestamp, k,
                            mine["item_id"].tolist() if exclude_seen else [])

    def raw(self, user_id: str, features: dict, history: list, k: int, timestamp: int, exclude_seen: bool = True):
        import pandas as pd

        row = {"user_id": user_id, **{s.name: features.get(s.name) for s in self.dataset.user_features}}
        hist = [str(h) for h in history]
        return self._search(pd.DataFrame([row]), [hist], [[0] * len(hist)], timestamp, k,
                            hist if exclude_seen else [])

    def _search(self, users_df, histories, history_ts, timestamp, k, exclude_ids):
        import pandas as pd
        from towers.inputs import query_features_batch

        features = query_features_batch(users_df, self.dataset.user_features, histories, [timestamp],
                                         self.max_history, history_timestamps=history_ts)
        vectors = self.tower(features)
        rows = pd.Index(self.index.item_ids).get_indexer(exclude_ids)
        scores, found = self.index.search(vectors, k, [np.unique(rows[rows >= 0])])
        keep = found[0] >= 0
        return self.index.item_ids[found[0][keep]].tolist(), scores[0][keep]
