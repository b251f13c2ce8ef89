"""Probe cells as Ray tasks: each fits one (hook, label, target) cell on a worker and returns the cell and its
probe files as bytes, which `probes.sweep.run(..., ray=...)` writes where a run in one process writes them.

The store is read at its path on the worker (on a multi-node cluster: a shared filesystem); nothing is
written on the worker outside a scratch folder it removes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from interp.activations.store import ActivationStore
from interp.cluster import read_tree
from probes.sweep import ProbeJobConfig, fit_cell


def cell_task(store_path: str, hook: str, label: str, target: str, cfg: ProbeJobConfig, slug: str,
              final_stem: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """One cell: its `CellResult` as a dict (recording `final_stem`'s path, where the caller puts the probe)
    and the probe's files under their names."""
    store = ActivationStore.open(store_path)
    tmp = Path(tempfile.mkdtemp(prefix="interp-probe-cell-"))
    try:
        r = fit_cell(store, hook, label, target, cfg, store.dataset(), tmp / slug)
        d = r.to_dict()
        if r.probe_path:  # the path the caller writes the probe to, as a run in one process records it
            d["probe_path"] = str(Path(f"{final_stem}.json"))
        return d, read_tree(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["cell_task"]
