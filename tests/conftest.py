"""Fixtures shared by several test modules."""
import faiss
import numpy as np
import pytest


@pytest.fixture(scope="module")
def one_faiss_thread():
    """Tests share 2 cores with other jobs; OpenMP spin-waiting makes 2 threads slower than 1 there.
    Use with ``pytestmark = pytest.mark.usefixtures("one_faiss_thread")``."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server for the session: SeaweedFS (``weed mini``) on 127.0.0.1, free ports,
    one bucket. While it runs, the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)
    point at it, so ``open_storage("s3://...")`` and processes started by tests reach it."""
    import os

    from core.seaweedfs import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    saved = {k: os.environ.get(k) for k in server.environ()}
    os.environ.update(server.environ())
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def s3_url(s3_server, request):
    """A fresh ``s3://<bucket>/<prefix>`` per test (nothing under it yet)."""
    import re
    import uuid

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    return s3_server.url(f"tests/{name}-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory, s3_server):
    """A ``dask.distributed`` cluster for the session: a scheduler and 2 single-threaded worker processes,
    each its own OS process started with the ``dask`` CLI on 127.0.0.1 (``beam_jobs.dask_cluster``).
    Run Beam on it with ``dask_cluster.pipeline_args()``. The S3 server is started first, so the workers
    inherit its AWS_* variables and can read and write ``s3://`` runs whichever test asked first."""
    from beam_jobs.dask_cluster import DaskCluster

    cluster = DaskCluster(workers=2, directory=tmp_path_factory.mktemp("dask-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """A GCS emulator for the session: fake-gcs-server on 127.0.0.1 with one bucket; while it runs
    STORAGE_EMULATOR_HOST points google-cloud-storage (and so ``open_storage("gs://...")``) at it."""
    import os

    from core.fake_gcs import FakeGCS

    server = FakeGCS(tmp_path_factory.mktemp("fake-gcs")).start()
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ.update(server.environ())
    try:
        yield server
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        server.stop()


@pytest.fixture
def gcs_url(gcs_server, request):
    """A fresh ``gs://<bucket>/<prefix>`` per test."""
    import re
    import uuid

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    return gcs_server.url(f"tests/{name}-{uuid.uuid4().hex[:8]}")


def check_png_plot(path, min_size=(300, 200), max_size=(2500, 1500)):
    """Check a saved plot is a real picture: a PNG whose width × height lie within the bounds and whose
    pixels are not all one colour (a blank or failed figure has zero pixel variance). Returns the pixel
    array (height, width, channels), floats in [0, 1]."""
    import matplotlib.image

    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert min_size[0] <= width <= max_size[0] and min_size[1] <= height <= max_size[1], \
        f"{path}: {width}x{height} pixels, expected between {min_size} and {max_size}"
    assert pixels[..., :3].std() > 0.02, f"{path}: blank image (pixel std {pixels[..., :3].std():.4f})"
    # not a near-empty canvas either: at least 1% of the pixels are not the background colour
    background = np.median(pixels[..., :3].reshape(-1, 3), axis=0)
    drawn = (np.abs(pixels[..., :3] - background).max(axis=-1) > 0.1).mean()
    assert drawn > 0.01, f"{path}: only {drawn:.2%} of the pixels differ from the background"
    return pixels


@pytest.fixture
def saved_figures(monkeypatch):
    """``capture(module)`` wraps ``module._save(fig, path, ...)`` so the test sees every matplotlib Figure the
    module saves, before it is rendered: returns a dict {file name: Figure}, filled as plots are written."""
    figures = {}

    def capture(module):
        original = module._save

        def recording_save(fig, path, *args, **kwargs):
            from pathlib import Path

            figures[Path(path).name] = fig
            return original(fig, path, *args, **kwargs)

        monkeypatch.setattr(module, "_save", recording_save)
        return figures

    return capture
