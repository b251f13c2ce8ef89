"""`interp ...`: the command line. Each subcommand is a thin layer over the Python API.

Subcommands live in one module each and register on the apps in `interp.cli.common`; importing this
package imports them all.
"""

from __future__ import annotations

from interp.cli import core, organism  # noqa: F401  (registers the subcommands)
from interp.cli import layers  # noqa: F401  (interp analyze layers, interp bench layers)
from interp.cli import activations  # noqa: F401  (interp harvest, store, probe, analyze latent-reasoning)
from interp.cli import patching  # noqa: F401  (interp patch, analyze faithfulness, bench patch)
from interp.cli import steering  # noqa: F401  (interp steer, analyze verbosity / reasoning-direction, bench steer)
from interp.cli import saes  # noqa: F401  (interp sae ..., analyze sae-reasoning, bench sae)
from interp.cli.common import analyze_app, app, bench_app, organism_app


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "analyze_app", "bench_app", "organism_app", "main"]
