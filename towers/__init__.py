"""Towers: query tower (user encoder) and item tower, trained with TF/TFRS.

Read in this order:
  config.py       TowerConfig / TrainConfig (frozen dataclasses; core.strict.from_dict)
  inputs.py       Dataset + split → examples (history strictly before each target), tf.data
                  batches, the contract's raw-feature dicts, eval queries (no TensorFlow needed
                  except for ``make_tf_dataset``)
  vocab.py        vocabularies / numeric statistics from training data only; vocab/ files
  features.py     Keras layers embedding raw features per FeatureSpec kind (ids, categorical,
                  multi_categorical, numeric, text) with OOV buckets
  head.py         per-feature vectors → optional per-example feature mask → MLP → L2 norm
  item_tower.py   item id + item features → [B, D]
  sequence_encoder.py  Transformer over the history (shared item tables, position + time-gap
                  embeddings, padding mask, mean / last pooling)
  query_tower.py  user encoder (tower.user_encoder: ids | features | sequence) → [B, D]
  model.py        TwoTowerModel: TFRS Retrieval, in-batch softmax over cosine / temperature,
                  logQ, MNS, SSL (objectives.py, frequency.py, negatives.py, feature_masking.py, ssl.py)
  clue.py         CLUE contrastive objective on the user encoder (pretraining or joint)
  strategy.py     tf.distribute strategy from the config (default | mirrored | multi_worker)
  monitor.py      val_recall@k callback (exact top-k over the catalogue)
  train.py        train(dataset, split, cfg, out_dir) -> TrainResult (resume, early stopping)
  export.py       export_towers / load_tower: SavedModels taking raw features, one model version

TensorFlow is imported only through ``towers.tf_env``; importing this package does not import it.
"""
