"""Experiment grids: specs, the resumable runner and the paper's tables (``dafnet experiment``).

See docs/results.md and docs/baselines.md.
"""

from dafnet.experiment.runner import run_experiment
from dafnet.experiment.spec import ExperimentSpec, load_spec

__all__ = ["ExperimentSpec", "load_spec", "run_experiment"]
