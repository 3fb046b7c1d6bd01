"""Studies: sweeps that train and evaluate many models (orchestration layer, like the pipeline)."""
