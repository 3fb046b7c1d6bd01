"""The bottom layer every other package may import: artifacts and their lifecycle, strict config,
the run directory, the model-version guard and exclusions. It imports no other project package."""
