"""``EvalResult``: everything one evaluation produced, with a JSON view and save / load.

A result holds, per *source* of rankings ("exact" = brute force over the item vectors, "index" =
the ANN index, "index_vs_exact" = the index's own recall against exact top-K):

  summary    DataFrame, one row per (source, family, slice): n_queries, n_cases, and for every metric
             ``<m>``, ``<m>_lo``, ``<m>_hi`` (bootstrap CI; NaN when bootstrap_samples == 0)
  per_query  DataFrame, per (source, family, slice, query) metric values (see ``eval.bootstrap``);
             what ``eval.compare.compare`` pairs across runs
  cases      DataFrame, one row per test case: query, query_id, target, target_count,
             rank_<source> (0-based, -1 = not in the top max(ks)) and slice_<family> labels
  info       dict: counts, slice definitions, coverage per source, timings, caller metadata

On disk (``save(dir)``): metrics.json (stable keys, see ``to_json``), summary.parquet,
per_query.parquet, cases.parquet, optionally report.md and PNG plots, then manifest.json last
(``core.artifacts.write_manifest``); ``load`` verifies the manifest first.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from eval.config import EvalConfig
from core.artifacts import atomic_write_bytes, atomic_write_json, verify_manifest, write_manifest

SCHEMA = "twotower-eval/1"
FILES = ("metrics.json", "summary.parquet", "per_query.parquet", "cases.parquet")


def _num(x):
    """JSON-safe float: NaN -> None."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


@dataclass
class EvalResult:
    name: str
    config: EvalConfig
    summary: pd.DataFrame
    per_query: pd.DataFrame
    cases: pd.DataFrame
    info: dict = field(default_factory=dict)

    @property
    def sources(self) -> list[str]:
        return list(pd.unique(self.summary["source"]))

    def metric_columns(self, source: str) -> list[str]:
        """Metric names reported for ``source``, in table order."""
        return list(self.info["metrics"][source])

    def value(self, metric: str, slice_key: str = "overall/all", source: str = "exact") -> float:
        """Point estimate of ``metric`` for ``slice_key`` ("family/slice") and ``source``."""
        family, _, slc = slice_key.partition("/")
        row = self.summary[(self.summary["source"] == source) & (self.summary["family"] == family)
                           & (self.summary["slice"] == slc)]
        if row.empty:
            raise KeyError(f"no slice {slice_key!r} for source {source!r}; have "
                           f"{sorted(set(self.summary['family'] + '/' + self.summary['slice']))}")
        if metric not in self.info["metrics"].get(source, []):
            raise KeyError(f"no metric {metric!r} for source {source!r}; have {self.info['metrics'].get(source)}")
        return float(row[metric].iloc[0])

    def to_json(self) -> dict:
        """The metrics.json document.

        {"schema", "name", "config", "counts", "slices", "metric_names", "timings", "metadata",
         "results": {source: {"coverage": {"coverage@K": v},
                              "slices": {"family/slice": {"n_queries", "n_cases",
                                                          "metrics": {m: {"value", "lo", "hi"}}}}}}}
        """
        results = {}
        for source in self.sources:
            metrics = self.info["metrics"][source]
            sub = self.summary[self.summary["source"] == source]
            slices = {}
            for rec in sub.to_dict("records"):
                slices[f"{rec['family']}/{rec['slice']}"] = {
                    "n_queries": int(rec["n_queries"]),
                    "n_cases": int(rec["n_cases"]),
                    "metrics": {m: {"value": _num(rec[m]), "lo": _num(rec[f"{m}_lo"]), "hi": _num(rec[f"{m}_hi"])}
                                for m in metrics},
                }
            results[source] = {"slices": slices}
            if source in self.info.get("coverage", {}):
                results[source]["coverage"] = self.info["coverage"][source]
        return {
            "schema": SCHEMA,
            "name": self.name,
            "config": self.config.to_dict(),
            "counts": self.info.get("counts", {}),
            "slices": self.info.get("slices", {}),
            "metric_names": self.info.get("metrics", {}),
            "timings": self.info.get("timings", {}),
            "metadata": self.info.get("metadata", {}),
            "results": results,
        }

    def save(self, directory: str | Path, extra_writer=None) -> Path:
        """Write the result to ``directory`` (created if needed); manifest.json last. Returns the dir.

        ``extra_writer(directory)`` may add files before the manifest is written, so they are listed in it
        (``eval.report.save_with_report`` passes the Markdown/PNG report writer that way).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for fname, df in (("summary.parquet", self.summary), ("per_query.parquet", self.per_query),
                          ("cases.parquet", self.cases)):
            buf = io.BytesIO()
            df.to_parquet(buf, index=False)
            atomic_write_bytes(directory / fname, buf.getvalue())
        atomic_write_json(directory / "metrics.json", self.to_json())
        if extra_writer is not None:
            extra_writer(directory)
        write_manifest(directory, {"kind": "eval", "schema": SCHEMA, "name": self.name})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "EvalResult":
        """Read a result written by ``save`` (manifest verified: missing/corrupt files raise ``ValueError``)."""
        directory = Path(directory)
        manifest = verify_manifest(directory)
        if manifest.get("kind") != "eval":
            raise ValueError(f"{directory} holds a {manifest.get('kind')!r} artifact, not an evaluation result")
        for fname in FILES:
            if fname not in manifest.get("files", {}):
                raise ValueError(f"{directory}: manifest does not list {fname}; re-run the evaluation")
        with open(directory / "metrics.json") as fh:
            doc = json.load(fh)
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"{directory}/metrics.json has schema {doc.get('schema')!r}, this code reads {SCHEMA!r}")
        return cls(
            name=doc["name"],
            config=EvalConfig.from_dict(doc["config"]),
            summary=pd.read_parquet(directory / "summary.parquet"),
            per_query=pd.read_parquet(directory / "per_query.parquet"),
            cases=pd.read_parquet(directory / "cases.parquet"),
            info={
                "counts": doc["counts"],
                "slices": doc["slices"],
                "metrics": doc["metric_names"],
                "timings": doc["timings"],
                "metadata": doc["metadata"],
                "coverage": {s: r["coverage"] for s, r in doc["results"].items() if "coverage" in r},
            },
        )
