"""Registers the organism with the core: `organism/<member>` model names and the `organism` task.

Listed under the `interp.plugins` entry point in pyproject.toml; the core imports it only through
`interp.registry`, never directly.
"""

from __future__ import annotations

import json

from interp.registry import register_models, register_task


def _task(arg: str):  # type: ignore[no-untyped-def]
    from interp.organism.reasoning_task import OrganismTask
    from interp.organism.task import TaskConfig

    return OrganismTask(TaskConfig.from_dict(json.loads(arg)) if arg else TaskConfig())


def register() -> None:
    from interp.organism.zoo_paths import ORGANISM_PREFIX, ZOO_NAMES, organism_path

    register_models(ORGANISM_PREFIX, organism_path, lambda: [ORGANISM_PREFIX + n for n in ZOO_NAMES], task="organism")
    register_task("organism", _task, "chains of assignments mod 10; `organism:{json TaskConfig}` for shifts")
