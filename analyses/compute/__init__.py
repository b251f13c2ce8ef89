"""Compute-matched curves: accuracy vs generated tokens (sampling, budgets) and vs parameters: `run(ComputeConfig)`."""

from analyses.compute.analysis import (
    ComputeConfig,
    ComputeResult,
    ModelCompute,
    Point,
    run,
    run_cached,
)

__all__ = ["ComputeConfig", "ComputeResult", "ModelCompute", "Point", "run", "run_cached"]
