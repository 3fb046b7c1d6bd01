"""twotower: CLI, typed config and run-directory orchestration for the two-tower retrieval system."""
__version__ = "0.1.0"
