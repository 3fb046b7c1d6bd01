"""``beam_jobs.dask_cluster.DaskCluster``: a scheduler and worker processes of their own, started and stopped."""
from __future__ import annotations

import os

import pytest

from beam_jobs.dask_cluster import DASK_RUNNER, DaskCluster


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_session_cluster_is_a_scheduler_and_two_worker_processes(dask_cluster):
    from distributed import Client

    pids = [p.pid for p in dask_cluster.processes]
    assert len(set(pids)) == 3 and os.getpid() not in pids and all(alive(p) for p in pids)
    with Client(dask_cluster.address, timeout=10) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert sorted(client.run(os.getpid).values()) == sorted(dask_cluster.worker_pids())
        assert all(w["host"] == "127.0.0.1" and w["nthreads"] == 1 for w in workers.values())
    assert dask_cluster.address.startswith("127.0.0.1:")
    assert dask_cluster.pipeline_args()[:4] == ["--runner", DASK_RUNNER, "--dask_client_address", dask_cluster.address]


def test_stop_ends_every_process_it_started(tmp_path):
    cluster = DaskCluster(workers=2, directory=tmp_path).start()
    pids = [p.pid for p in cluster.processes]
    assert len(pids) == 3 and all(alive(p) for p in pids)
    cluster.stop()
    assert not any(alive(p) for p in pids) and cluster.processes == []
    assert (tmp_path / "scheduler.log").is_file() and (tmp_path / "worker-1.log").is_file()


def test_a_cluster_needs_a_worker():
    with pytest.raises(ValueError, match="at least one worker process"):
        DaskCluster(workers=0)
