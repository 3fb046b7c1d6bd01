"""The Beam jobs on a real ``dask.distributed`` cluster (scheduler + 2 worker processes, ``dask_cluster``
fixture) through ``beam_jobs.dask_runner.DaskRunner``: the published index is byte-identical to the
DirectRunner build, dead letters reach only the dead-letter writer, and every sink runs."""
from __future__ import annotations

import json
import os

import pytest

from beam_jobs.beam_env import beam, pipeline_options
from beam_jobs.dask_cluster import DASK_RUNNER
from beam_jobs.embed_items import BadVectors, EmbedConfig
from beam_jobs.rebuild_index import RebuildConfig, run_rebuild
from beam_jobs.testing import cached_hashing_item_tower, synthetic_items
from core import artifacts
from core import lifecycle
from indexing.spec import IndexSpec

IVF = IndexSpec(factory="IVF16,Flat", nprobe=8, gpu="never", recall_k=20, recall_queries=200)
BEAM_DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def new_run(root, model_dir, n):
    run = root / "run"
    (run / "data").mkdir(parents=True)
    (run / "model").symlink_to(model_dir, target_is_directory=True)
    synthetic_items(n, seed=5).to_parquet(run / "data" / "items.parquet", row_group_size=500)
    return run


def executed_per_worker(cluster) -> dict:
    from distributed import Client

    with Client(cluster.address, timeout=10) as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


@pytest.mark.slow
def test_the_rebuild_on_dask_publishes_the_directrunner_index_byte_for_byte(tmp_path, dask_cluster):
    model_dir = cached_hashing_item_tower(dim=16)
    direct_run = new_run(tmp_path / "direct", model_dir, 2400)
    dask_run = new_run(tmp_path / "dask", model_dir, 2400)
    # 4 read units and 4 shards, so both workers get some of the embedding and of the index adds
    cfg = dict(index=IVF, version="v1", embed=EmbedConfig(num_shards=4, rows_per_read=600, batch_size=300))
    direct = run_rebuild(RebuildConfig(run=str(direct_run), **cfg), ["--runner", "DirectRunner"])
    before = executed_per_worker(dask_cluster)
    on_dask = run_rebuild(RebuildConfig(run=str(dask_run), **cfg), dask_cluster.pipeline_args())
    after = executed_per_worker(dask_cluster)

    assert (on_dask.count, on_dask.num_shards) == (direct.count, direct.num_shards) == (2400, direct.num_shards)
    assert (on_dask.index_dir / "index.faiss").read_bytes() == (direct.index_dir / "index.faiss").read_bytes()
    assert (on_dask.vectors_dir / "manifest.json").is_file()
    for shard in artifacts.read_manifest(direct.vectors_dir)["shards"]:
        assert (on_dask.vectors_dir / shard).read_bytes() == (direct.vectors_dir / shard).read_bytes()
    assert lifecycle.current_version(dask_run / "index") == "v1"
    assert set(after) == set(before) and len(after) == 2
    assert all(after[w] > before[w] for w in after), (before, after)  # both worker processes did work


def test_bad_vectors_on_dask_reach_the_dead_letters_and_publish_nothing(tmp_path, dask_cluster):
    run = new_run(tmp_path, cached_hashing_item_tower(dim=16, nan_item_ids=("item7",)), 600)
    with pytest.raises(BadVectors, match=r"NaN/inf or all-zero vectors for 1 item\(s\).*nothing was published"):
        run_rebuild(RebuildConfig(run=str(run), index=IVF), dask_cluster.pipeline_args())
    assert lifecycle.current_version(run / "index") is None and lifecycle.list_versions(run / "vectors") == []


class Record(beam.DoFn):
    """Writes each element (and the pid that processed it) to ``<directory>/<name>-<pid>.jsonl``."""

    def __init__(self, directory, name):
        self._directory, self._name = str(directory), name

    def process(self, element):
        with open(os.path.join(self._directory, f"{self._name}-{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps(element) + "\n")
        return ()


class SplitOddEven(beam.DoFn):
    def process(self, x):
        yield beam.pvalue.TaggedOutput("odd", x) if x % 2 else x


def run_split_pipeline(runner: str, address: str, directory) -> dict[str, list]:
    """Evens (main output) and odds (tagged) of 0..39 go to two sinks; a third, unrelated branch
    is a separate sink. Returns what each sink received, and the pids that ran them."""
    options = pipeline_options(["--runner", runner, "--dask_client_address", address])
    with beam.Pipeline(options=options) as p:
        split = p | "Numbers" >> beam.Create(list(range(40))) | beam.ParDo(SplitOddEven()).with_outputs("odd", main="even")
        split.even | "Evens" >> beam.ParDo(Record(directory, "even"))
        split.odd | "Odds" >> beam.ParDo(Record(directory, "odd"))
        p | "Other" >> beam.Create(["x", "y"]) | "OtherSink" >> beam.ParDo(Record(directory, "other"))
    if runner == BEAM_DASK_RUNNER:  # Beam's runner leaves its client connected (ours closes it)
        from distributed import default_client

        default_client().close()
    got: dict[str, list] = {"even": [], "odd": [], "other": [], "pids": set()}
    for path in directory.iterdir():
        name, pid = path.stem.rsplit("-", 1)
        got[name] += [json.loads(line) for line in path.read_text().splitlines()]
        got["pids"].add(int(pid))
    return got


def test_outputs_of_a_multi_output_pardo_stay_apart_and_every_sink_runs_on_the_workers(tmp_path, dask_cluster):
    got = run_split_pipeline(DASK_RUNNER, dask_cluster.address, tmp_path)
    assert sorted(got["even"]) == list(range(0, 40, 2)) and sorted(got["odd"]) == list(range(1, 40, 2))
    assert sorted(got["other"]) == ["x", "y"]
    assert got["pids"] <= set(dask_cluster.worker_pids()) and os.getpid() not in got["pids"]


def test_beams_own_dask_runner_still_mixes_tagged_outputs(tmp_path, dask_cluster):
    """Why beam_jobs.dask_runner exists: Beam 2.77's DaskRunner hands every output of a multi-output
    ParDo to every consumer and drops sinks other than the last. When this fails, Beam fixed it:
    drop our subclass and select apache_beam.runners.dask.dask_runner.DaskRunner."""
    got = run_split_pipeline(BEAM_DASK_RUNNER, dask_cluster.address, tmp_path)
    assert sorted(got["odd"]) != list(range(1, 40, 2)) or sorted(got["even"]) != list(range(0, 40, 2)) \
        or got["other"] != ["x", "y"]


class CountPerBundle(beam.DoFn):
    """Emits nothing per element, and the bundle's element count from finish_bundle."""

    def start_bundle(self):
        self._n = 0

    def process(self, x):
        self._n += 1
        return ()

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        yield WindowedValue(self._n, 0, [GlobalWindow()])


def test_outputs_emitted_in_finish_bundle_are_kept(tmp_path, dask_cluster):
    options = pipeline_options(["--runner", DASK_RUNNER, "--dask_client_address", dask_cluster.address,
                                "--dask_partition_size", "10"])
    with beam.Pipeline(options=options) as p:
        (p | beam.Create(list(range(40))) | beam.ParDo(CountPerBundle())
         | "Record" >> beam.ParDo(Record(tmp_path, "count")))
    counts = [json.loads(line) for path in tmp_path.iterdir() for line in path.read_text().splitlines()]
    assert sorted(counts) == [10, 10, 10, 10]


@pytest.mark.slow
def test_the_sharded_rebuild_on_dask_publishes_the_directrunner_shards_byte_for_byte(tmp_path, dask_cluster):
    """The bounded-memory path (beam_jobs.sharded_rebuild): the index shards are added on both worker processes
    and every published file but the top manifest (which records the runner and timings) equals the DirectRunner
    build byte for byte."""
    model_dir = cached_hashing_item_tower(dim=16)
    direct_run = new_run(tmp_path / "direct", model_dir, 2400)
    dask_run = new_run(tmp_path / "dask", model_dir, 2400)
    spec = IndexSpec(factory="IVF16,Flat", gpu="never", recall_k=20, recall_queries=200, tune_queries=200,
                     target_recall=0.9)
    cfg = dict(index=spec, version="v1", shards=4, recall_floor=0.85,
               embed=EmbedConfig(num_shards=4, rows_per_read=600, batch_size=300))
    direct = run_rebuild(RebuildConfig(run=str(direct_run), **cfg), ["--runner", "DirectRunner"])
    before = executed_per_worker(dask_cluster)
    on_dask = run_rebuild(RebuildConfig(run=str(dask_run), **cfg), dask_cluster.pipeline_args())
    after = executed_per_worker(dask_cluster)

    assert on_dask.num_shards == direct.num_shards == 4 and on_dask.recall == direct.recall
    files = artifacts.read_manifest(direct.index_dir)["files"]
    assert len(files) == 12
    for name in files:
        assert (on_dask.index_dir / name).read_bytes() == (direct.index_dir / name).read_bytes(), name
    top = {k: v for k, v in artifacts.read_manifest(on_dask.index_dir).items() if k not in ("seconds", "runner",
                                                                                            "created", "vectors_dir")}
    assert top == {k: v for k, v in artifacts.read_manifest(direct.index_dir).items()
                   if k not in ("seconds", "runner", "created", "vectors_dir")}
    assert lifecycle.current_version(dask_run / "index") == "v1"
    assert all(after[w] > before[w] for w in after), (before, after)  # both worker processes did work
