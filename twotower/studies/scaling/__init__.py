"""Scaling-law study of the CLUE user encoder (issue #7): how the contrastive loss falls with
compute, parameters and data, and what that buys in retrieval recall.

    python -m twotower.studies.scaling --grid scaling_default --out runs/scaling
    twotower.studies.scaling.sweep.run_sweep(grid_path, out_dir, resume=True) -> SweepOutcome

Read in this order:
  grid.py         ScalingGrid (data, recipe = TrainConfig, sweep axes, probe, validation, eval,
                  fit) from YAML via core.strict; expand_points; point_key (name + hash)
  subsets.py      the data axis: nested whole-user subsets of the training split
  flops.py        N (non-embedding parameters) and training FLOPs per epoch from the architecture
                  and the history lengths seen; count_encoder_parameters checks N on the model
  contrastive.py  train the CLUE objective alone, epoch by epoch; fixed-view losses comparable
                  across points and batch sizes
  probe.py        retrieval probe (finetune | frozen) and recall overall / head / tail through
                  eval.evaluate.evaluate_vectors, graded like twotower.pipeline.stage_eval
  point.py        one point: data → model → contrastive epochs → probe → result dict
  fit.py          a·(x/x0)^(−b) + c in log space (scipy curve_fit), R², residual bootstrap
  laws.py         which measurements L(C) (compute frontier), L(N), L(D) are fitted on
  report.py       PNG plots (log-log), report.md, points.csv, fits.json
  sweep.py        run_sweep: resumable loop over the points (atomic result.json per point), fits, report

Only point.py, contrastive.py and probe.py import TensorFlow (through towers.tf_env).
"""
