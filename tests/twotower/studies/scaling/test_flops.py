import numpy as np
import pytest

from twotower.studies.scaling.flops import (EncoderShape, clue_epoch_flops, count_encoder_parameters, item_vector_width,
                                  view_lengths)

TINY = EncoderShape(num_layers=1, width=4, ff_dim=8, input_dim=6, projection_dim=3)


def test_parameter_formula_matches_a_hand_count():
    # item projection 6·4 + 4 = 28; block: Q,K,V,O 4·(4·4 + 4) = 80, LN 2·(4 + 4) = 16,
    # FF (4·8 + 8) + (8·4 + 4) = 76 → 172; final LN 8.  N = 28 + 172 + 8 = 208
    assert TINY.non_embedding_params == 208
    # projection head: Dense(4 → 3) 15 + Dense(3 → 3) 12 = 27
    assert TINY.projection_params == 27
    two = EncoderShape(num_layers=2, width=4, ff_dim=8, input_dim=6, projection_dim=3)
    assert two.non_embedding_params == 208 + 172


def test_epoch_flops_match_a_hand_count():
    # histories of 0, 1, 5 and 4 items, crops of 0.5: views of 0, 1, 3 (ceil 2.5), 2 items, twice each
    lengths = np.array([0, 1, 5, 4])
    first, second = view_lengths(lengths, "crops", 0.5)
    assert first.tolist() == second.tolist() == [0, 1, 3, 2]
    f = clue_epoch_flops(TINY, lengths, batch_size=3, views="crops", crop=0.5)
    assert f.tokens == 12 and f.examples == 4
    # forward: dense 2·208·12 = 4992; attention 4·1·4·2·(0 + 1 + 9 + 4) = 448;
    # head 2·27 per view · 8 views = 432; logits 2·3·(3² + 1²) = 60 (batches of 3 and 1)
    # training = 3 × forward
    assert (f.dense, f.attention, f.head, f.logits) == (3 * 4992, 3 * 448, 3 * 432, 3 * 60)
    assert f.total == 3 * (4992 + 448 + 432 + 60) == 17796
    assert f.to_dict()["total"] == 17796


def test_windows_split_each_history_in_halves():
    first, second = view_lengths(np.array([0, 1, 2, 5]), "windows", 0.6)
    assert first.tolist() == [0, 1, 1, 2]
    assert second.tolist() == [0, 1, 1, 3]


def test_item_vector_width_counts_each_feature_kind():
    kinds = ["categorical", "multi_categorical", "numeric", "text"]
    assert item_vector_width(16, 8, kinds, item_features=True) == 16 + 8 + 8 + 10 + 8
    assert item_vector_width(16, 8, kinds, item_features=False) == 16


@pytest.mark.parametrize("call, match", [
    (lambda: view_lengths(np.array([[1, 2]]), "crops", 0.5), "1-D array of ints >= 0"),
    (lambda: view_lengths(np.array([-1]), "crops", 0.5), "1-D array of ints >= 0"),
    (lambda: view_lengths(np.array([1.5]), "crops", 0.5), "1-D array of ints >= 0"),
    (lambda: view_lengths(np.array([1]), "halves", 0.5), "'crops' or 'windows'"),
    (lambda: view_lengths(np.array([1]), "crops", 0.0), r"crop must be in \(0, 1\]"),
    (lambda: clue_epoch_flops(TINY, np.array([1]), 0), "batch_size must be > 0"),
    (lambda: EncoderShape(1, 0, 8, 6, 3), "width must be a positive int"),
    (lambda: item_vector_width(8, 4, ["image"], True), "unknown item feature kind 'image'"),
])
def test_bad_input_is_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------- against TF


def test_view_lengths_match_the_views_towers_clue_makes():
    from towers.clue import history_views
    from towers.tf_env import tf

    lengths = np.arange(0, 41)
    width = 40
    history = np.where(np.arange(width)[None, :] < lengths[:, None], "x", "").astype(object)
    stamps = np.where(history != "", 1, 0).astype(np.int64)
    for views, crop in (("crops", 0.6), ("crops", 0.3), ("crops", 1.0), ("windows", 0.6)):
        (h1, _), (h2, _) = history_views(tf.constant(history), tf.constant(stamps), views, crop, seed=1)
        got1 = (h1.numpy() != b"").sum(axis=1)
        got2 = (h2.numpy() != b"").sum(axis=1)
        first, second = view_lengths(lengths, views, crop)
        assert got1.tolist() == first.tolist(), (views, crop)
        assert got2.tolist() == second.tolist(), (views, crop)


@pytest.mark.parametrize("item_features", [True, False])
def test_formula_matches_the_parameters_of_a_built_encoder(item_features):
    from tests.towers.conftest import planted
    from towers.config import SequenceConfig, TowerConfig
    from towers.item_tower import ItemTower, make_item_id_embedding
    from towers.inputs import item_features_batch, make_tf_dataset, training_examples
    from towers.query_tower import QueryTower
    from towers.vocab import build_vocabularies

    dataset, split = planted()
    cfg = TowerConfig(user_encoder="sequence", id_embedding_dim=8, feature_embedding_dim=4, max_history=6,
                      sequence=SequenceConfig(num_layers=2, width=12, num_heads=3, ff_dim=20,
                                              item_features=item_features))
    vocab = build_vocabularies(dataset, split.train, cfg)
    ids = make_item_id_embedding(vocab, cfg)
    items = ItemTower(ids, vocab, cfg)
    catalogue = item_features_batch(dataset.items, vocab.item_specs) if item_features else None
    tower = QueryTower(ids, vocab, cfg, item_features=items.features if item_features else None, catalogue=catalogue)
    batch = next(iter(make_tf_dataset(dataset, training_examples(dataset, split.train, 6), 16, False, 0)))
    tower(batch["query"])
    shape = EncoderShape(num_layers=2, width=12, ff_dim=20, projection_dim=4,
                         input_dim=item_vector_width(8, 4, [s.kind for s in vocab.item_specs], item_features))
    counted = count_encoder_parameters(tower.history_encoder)
    assert counted["non_embedding"] == shape.non_embedding_params
    # embeddings: the shared item-id table, position (6 × 12) and time-gap (32 × 12) tables, + feature tables
    assert counted["embedding"] >= ids.embeddings.shape[0] * 8 + 6 * 12 + 32 * 12
