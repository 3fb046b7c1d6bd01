"""Fixtures shared by several test modules."""
import faiss
import pytest


@pytest.fixture(scope="module")
def one_faiss_thread():
    """Tests share 2 cores with other jobs; OpenMP spin-waiting makes 2 threads slower than 1 there.
    Use with ``pytestmark = pytest.mark.usefixtures("one_faiss_thread")``."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)
