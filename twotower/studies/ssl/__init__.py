"""The SSL study (issue #18): feature-masking SSL vs none vs simpler regularisers, by supervision fraction.

    python -m twotower.studies.ssl --grid ssl_movielens --out runs/ssl-ml   (or `twotower study ssl`)

``grid`` (the YAML → ``SSLGrid``), ``point`` (train one subset, grade every slice), ``report`` (pooled paired
gains, verdicts, plot); points are resumable (``twotower.studies.points``).
"""
