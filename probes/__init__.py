"""Linear probes on stored activations, done properly: splits by problem, control tasks, intervals.

    from probes import ProbeJobConfig, run, Probe
    result = run(ProbeJobConfig(store="acts/base-s", targets=("intermediate.step1",), out="probes/base-s"))
    probe = Probe.load("probes/base-s/probes/<cell>")     # score new activations with probe.predict(x)
"""

from probes.linear import Probe, ProbeMismatchError, fit, infer_kind
from probes.splits import control_labels, group_bootstrap, split_by_group
from probes.sweep import (
    CellResult,
    ProbeJobConfig,
    Score,
    SweepResult,
    fit_cell,
    rows_for,
    run,
    score,
)

__all__ = [
    "CellResult", "Probe", "ProbeJobConfig", "ProbeMismatchError", "Score", "SweepResult", "control_labels",
    "fit", "fit_cell", "group_bootstrap", "infer_kind", "rows_for", "run", "score", "split_by_group",
]
