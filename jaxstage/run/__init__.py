"""The run layer: run directory, host loop, checkpoints, logging and report, shared by every trainer."""
