import numpy as np
import pytest

from recdata.schema import FeatureSpec
from towers.config import TowerConfig
from towers.features import (CategoricalEmbedding, FeatureEmbeddings, IdEmbedding, MultiCategoricalEmbedding,
                             NumericEmbedding, TextEmbedding, masked_mean, tokenize_text)
from towers.head import TowerHead
from towers.tf_env import tf
from towers.vocab import NumericStats, TokenVocabulary


def table(layer) -> np.ndarray:
    return layer.table.embeddings.numpy()


def test_id_embedding_lookup_layout_and_oov():
    ids = IdEmbedding(["a", "b"], oov_buckets=1, hash_bins=0, dim=4)
    rows = ids.lookup(tf.constant([["a", "b", "", "never-seen", "other"]])).numpy()
    assert rows.tolist() == [[2, 3, 0, 1, 1]]  # 0 padding, 1 OOV, then the vocabulary
    vecs = ids(tf.constant(["never-seen", "b"])).numpy()
    assert np.allclose(vecs, table(ids)[[1, 3]])
    hashed = IdEmbedding([], oov_buckets=1, hash_bins=16, dim=4)
    h = hashed.lookup(tf.constant(["", "x", "y", "x"])).numpy()
    assert h[0] == 0 and (1 <= h[1:]).all() and (h[1:] <= 16).all() and h[1] == h[3]
    assert hashed.input_dim == 17


def test_categorical_missing_and_unknown_rows():
    layer = CategoricalEmbedding(["film", "series"], oov_buckets=2, dim=3)
    out = layer(tf.constant(["film", "", "cartoon", "film"])).numpy()
    t = table(layer)
    assert np.allclose(out[0], t[3]) and np.allclose(out[1], t[0])  # "" → its own (missing) row
    assert any(np.allclose(out[2], t[i]) for i in (1, 2))            # unseen → one of the 2 OOV rows
    assert np.isfinite(out).all()


def test_multi_categorical_is_a_masked_mean():
    layer = MultiCategoricalEmbedding(["x", "y", "z"], oov_buckets=1, dim=3)
    out = layer(tf.constant([["x", "z", ""], ["", "", ""], ["y", "new", ""]])).numpy()
    t = table(layer)
    assert np.allclose(out[0], (t[2] + t[4]) / 2)
    assert np.allclose(out[1], 0.0)                   # no values → zeros, not NaN
    assert np.allclose(out[2], (t[3] + t[1]) / 2)     # unknown value uses the OOV row


def test_numeric_is_normalised_imputed_and_bucketised():
    layer = NumericEmbedding(mean=10.0, std=2.0, boundaries=[9.0, 11.0], dim=3)
    out = layer(tf.constant([10.0, np.nan, 14.0, 1000.0, 8.0])).numpy()
    t = table(layer)
    assert out.shape == (5, 5)
    assert out[:, 0].tolist() == pytest.approx([0.0, 0.0, 2.0, 5.0, -1.0])  # z, clipped at ±5, NaN → 0
    assert out[:, 1].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]                   # missing flag
    buckets = [2, 0, 3, 3, 1]                                                  # 0 = missing
    assert np.allclose(out[:, 2:], t[buckets])


def test_text_tokens_and_pooling():
    tokens = tokenize_text(tf.constant(["Toy Story (1995)!", "", "ÉCOLE  d'été"])).to_list()
    assert tokens == [[b"toy", b"story", b"1995"], [], ["école".encode(), b"d", "été".encode()]]
    layer = TextEmbedding(["toy", "story"], oov_buckets=1, dim=3, max_length=2)
    out = layer(tf.constant(["toy story", "", "story mystery toy"])).numpy()
    t = table(layer)
    assert np.allclose(out[0], (t[2] + t[3]) / 2)
    assert np.allclose(out[1], 0.0)
    assert np.allclose(out[2], (t[3] + t[1]) / 2)  # only the first max_length=2 tokens


def test_masked_mean_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 3)).astype(np.float32)
    mask = rng.random((4, 5)) < 0.5
    mask[0] = False
    got = masked_mean(tf.constant(x), tf.constant(mask)).numpy()
    for b in range(4):
        want = x[b][mask[b]].mean(axis=0) if mask[b].any() else np.zeros(3)
        assert np.allclose(got[b], want, atol=1e-6)


def test_feature_embeddings_in_spec_order_and_empty_vocabulary():
    specs = (FeatureSpec("kind", "categorical"), FeatureSpec("year", "numeric"))
    vocab = {"kind": TokenVocabulary("categorical", ()), "year": NumericStats(0.0, 1.0, (), 1.0)}
    layer = FeatureEmbeddings(specs, vocab, TowerConfig(feature_embedding_dim=4))
    parts = layer({"kind": tf.constant(["anything", ""]), "year": tf.constant([1.0, np.nan])})
    assert [p.shape.as_list() for p in parts] == [[2, 4], [2, 6]]
    assert layer.names == ("kind", "year")
    with pytest.raises(ValueError, match=r"missing feature input\(s\) \['year'\]"):
        layer({"kind": tf.constant(["a"])})
    with pytest.raises(ValueError, match="feature 'year' .* has no vocabulary/statistics"):
        FeatureEmbeddings(specs, {"kind": vocab["kind"]}, TowerConfig())
    with pytest.raises(ValueError, match="feature name 'my year' cannot name an exported tower input"):
        FeatureEmbeddings((FeatureSpec("my year", "numeric"),), {"my year": vocab["year"]}, TowerConfig())


def test_encode_once_then_embed_equals_call_for_every_kind_and_a_wider_padded_text():
    """What the sequence encoder does with the catalogue: encode all rows once (strings → int rows),
    gather some, embed; equals calling the layer on those rows' raw values. The catalogue's text
    rows are as wide as its longest title, wider than a batch's; the extra padding changes nothing."""
    specs = (FeatureSpec("kind", "categorical"), FeatureSpec("tags", "multi_categorical"),
             FeatureSpec("year", "numeric"), FeatureSpec("title", "text"))
    vocab = {"kind": TokenVocabulary("categorical", ("a", "b")), "tags": TokenVocabulary("multi_categorical", ("x", "y")),
             "year": NumericStats(2000.0, 10.0, (1995.0, 2005.0), 1.0),
             "title": TokenVocabulary("text", ("toy", "story", "heat"))}
    layer = FeatureEmbeddings(specs, vocab, TowerConfig(feature_embedding_dim=4, text_max_length=3))
    catalogue = {"kind": tf.constant(["a", "b", "", "zzz"]), "tags": tf.constant([["x", "y"], ["y", ""], ["", ""], ["q", "x"]]),
                 "year": tf.constant([1990.0, np.nan, 2010.0, 2001.0]),
                 "title": tf.constant(["Toy Story heat toy", "Heat", "", "story of toys"])}
    encoded = layer.encode(catalogue)
    assert encoded["title"].shape == (4, 3) and encoded["title"].dtype == tf.int64  # longest title, cut at 3
    rows = tf.constant([1, 2, 1])  # "Heat" and "" alone would encode to width 1
    got = layer.embed({n: tf.gather(t, rows) for n, t in encoded.items()})
    want = layer({n: tf.gather(t, rows) for n, t in catalogue.items()})
    assert layer({n: tf.gather(t, rows) for n, t in catalogue.items()})[3].shape == (3, 4)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(got[3].numpy()[0], 0.0) and np.allclose(got[3].numpy()[1], 0.0)  # "Heat" vs ""


def test_head_output_is_unit_norm_and_feature_mask_zeroes_features():
    head = TowerHead(TowerConfig(hidden_units=(8,), output_dim=5))
    rng = np.random.default_rng(1)
    a = tf.constant(rng.normal(size=(3, 4)), tf.float32)
    b = tf.constant(rng.normal(size=(3, 2)), tf.float32)
    out = head([a, b]).numpy()
    assert out.shape == (3, 5) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    mask = tf.constant([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    masked = head([a, b], feature_mask=mask).numpy()
    assert np.allclose(masked[0], head([a, tf.zeros_like(b)]).numpy()[0], atol=1e-6)
    assert np.allclose(masked[1], out[1], atol=1e-6)
    assert np.allclose(masked[2], head([tf.zeros_like(a), b]).numpy()[2], atol=1e-6)
    with pytest.raises(ValueError, match=r"feature_mask must be \[batch, 2\]"):
        head([a, b], feature_mask=tf.ones((3, 3)))
