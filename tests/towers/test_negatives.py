import numpy as np
import pytest

from towers.negatives import ItemCorpus, step_seed
from towers.tf_env import tf


def test_corpus_draws_are_uniform_deterministic_and_gathered():
    corpus = ItemCorpus({"item_id": np.array([f"i{k}" for k in range(10)], object),
                         "tags": np.array([[f"t{k}", ""] for k in range(10)], object),
                         "price": np.arange(10, dtype=np.float32)})
    rows = corpus.uniform_rows(20_000, step_seed(5, tf.constant(3), 1)).numpy()
    assert rows.min() >= 0 and rows.max() <= 9
    counts = np.bincount(rows, minlength=10)
    np.testing.assert_array_less(np.abs(counts / 2000 - 1), 0.06)
    again = corpus.uniform_rows(20_000, step_seed(5, tf.constant(3), 1)).numpy()
    np.testing.assert_array_equal(rows, again)
    other = corpus.uniform_rows(20_000, step_seed(5, tf.constant(4), 1)).numpy()
    assert (rows != other).mean() > 0.8
    other_stream = corpus.uniform_rows(20_000, step_seed(5, tf.constant(3), 2)).numpy()
    assert (rows != other_stream).mean() > 0.8
    batch = corpus.gather(tf.constant([3, 3, 7], tf.int64))
    assert batch["item_id"].numpy().tolist() == [b"i3", b"i3", b"i7"]
    assert batch["tags"].shape == (3, 2) and batch["price"].numpy().tolist() == [3.0, 3.0, 7.0]


def test_corpus_rejects_bad_tables():
    with pytest.raises(ValueError, match=r"corpus features need 'item_id'"):
        ItemCorpus({"price": np.zeros(3)})
    with pytest.raises(ValueError, match=r"same number of rows >= 1, got \{'item_id': 3, 'price': 2\}"):
        ItemCorpus({"item_id": np.array(["a", "b", "c"]), "price": np.zeros(2)})
