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

from twotower.rundir import RunDir

TINY = [
    "name=tiny", "data.source=synthetic",
    "data.synthetic.num_users=300", "data.synthetic.num_items=200", "data.synthetic.num_interactions=6000",
    "train.epochs=1", "train.batch_size=256", "train.verbose=0", "train.tensorboard=false",
    "train.tower.output_dim=16", "train.tower.id_embedding_dim=16", "train.tower.feature_embedding_dim=8",
    "train.tower.hidden_units=[32]", "train.tower.max_history=20",
    "index.factory=Flat", "index.recall_queries=100",
]


@lru_cache(maxsize=1)
def tiny_run() -> RunDir:
    """The shared tiny run (do not modify it; use ``copy_run``)."""
    from twotower import pipeline
    from twotower.config import load_config

    base = Path(tempfile.mkdtemp(prefix="serving-tiny-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    root = base / "tiny"
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "demo.yaml", TINY)
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
    from twotower import artifacts

    dataset, _ = load_split(run.data)
    tower = load_tower(run.item_tower)
    features = item_features_batch(dataset.items, dataset.item_features)
    vectors = tower(features)
    ids = features["item_id"]
    write_vectors(run.vectors / version, ids, vectors, tower.model_version, num_shards=2)
    artifacts.publish(run.vectors, version)
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
    from twotower import artifacts

    ids, vectors, manifest = read_vectors(artifacts.current_dir(run.vectors))
    if perturb:
        rng = np.random.default_rng(seed)
        vectors = vectors + perturb * rng.standard_normal(vectors.shape).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ItemIndex.build(vectors, ids, IndexSpec(factory=factory, recall_queries=50),
                            model_version or manifest["model_version"])
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{seed}-{time.perf_counter_ns() % 10**6:06d}"
    publish(run.index, index, version, keep=10)
    return version
