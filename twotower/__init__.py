"""twotower: CLI, typed config and run-directory orchestration for the two-tower retrieval system."""
from pathlib import Path

__version__ = "0.1.0"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
