"""Hybrid decoding and token routing between a base and a tuned model ("when, not how"): `run(RoutingConfig)`."""

from analyses.routing.analysis import (
    PairRouting,
    RouterOutcome,
    RoutingConfig,
    RoutingResult,
    run,
    run_cached,
)

__all__ = ["PairRouting", "RouterOutcome", "RoutingConfig", "RoutingResult", "run", "run_cached"]
