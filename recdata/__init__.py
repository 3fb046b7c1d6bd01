"""Data stage: schema, loaders (MovieLens, GroupLens layouts, Parquet/CSV), synthetic data, splits."""
from recdata.loading import DataConfig, TemporalConfig, load_dataset, load_split, make_split, save_split
from recdata.schema import Dataset, FeatureSpec
from recdata.splits import Split, leave_last_out, temporal, train_counts
from recdata.synthetic import SyntheticConfig, generate
from recdata.vocab import Vocabulary

__all__ = ["Dataset", "FeatureSpec", "DataConfig", "TemporalConfig", "load_dataset", "make_split",
           "save_split", "load_split", "Split", "leave_last_out", "temporal", "train_counts",
           "SyntheticConfig", "generate", "Vocabulary"]
