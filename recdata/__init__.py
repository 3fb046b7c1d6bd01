"""Data stage: schema, loaders (MovieLens, GroupLens layouts, Parquet/CSV), synthetic data, splits."""
from recdata.schema import Dataset, FeatureSpec

__all__ = ["Dataset", "FeatureSpec"]
