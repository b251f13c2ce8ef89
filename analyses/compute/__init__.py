"""Compute-matched curves: accuracy vs generated tokens (sampling, budgets, budget forcing) and vs parameters: `run(ComputeConfig)`."""

from analyses.compute.analysis import (
    ComputeConfig,
    ComputeResult,
    Forcing,
    ModelCompute,
    Point,
    run,
    run_cached,
)

__all__ = ["ComputeConfig", "ComputeResult", "Forcing", "ModelCompute", "Point", "run", "run_cached"]
