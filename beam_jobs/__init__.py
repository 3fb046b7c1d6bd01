"""Beam jobs: embed the item catalogue with the exported item tower and rebuild the FAISS index.

Importing the package first imports Apache Beam through ``beam_jobs.beam_env``, which drops Beam's
"apitools not found" root-logger warning (the one place that noise is silenced).
"""
from beam_jobs import beam_env as _beam_env  # noqa: F401
