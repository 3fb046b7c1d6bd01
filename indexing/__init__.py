"""Item index layer: FAISS top-k over item vectors (knows FAISS, NumPy and pyarrow; never TensorFlow).

    spec.py        IndexSpec + the "auto" factory rule
    item_index.py  ItemIndex: build, search with per-query exclusions, recall
    tuning.py      nprobe / ef_search / k_factor tuned on the query set (query-tower vectors, else item vectors)
    quantizer.py   IVF coarse quantizer chosen among seeded restarts by recall on the query set
    sharded.py     train_empty / add_shard / merge_shards for the Beam rebuild
    sharded_index.py  ShardedItemIndex (N shards by item range, fan-out search), save/load, load_any
    gpu.py         optional GPU clone (faiss-gpu builds)
    vectors.py     the item-vectors artifact (Parquet shards + manifest)
    store.py       save / load / publish index artifacts
    recall.py      recall against exact search
    synthetic.py   clustered, normalised test vectors (tests and benchmarks)
"""
