"""Registers the natural-language organism with the core: `organism-nl/<member>` model names and the
`organism-nl` task (`organism-nl:{json NLTaskConfig}` for shifted distributions).

Listed under the `interp.plugins` entry point in pyproject.toml; the core imports it only through
`interp.registry`, never directly.
"""

from __future__ import annotations

import json
from typing import Any

from interp.registry import register_models, register_task


def _task(arg: str) -> Any:
    from interp.organism_nl.task import NLTask, NLTaskConfig

    if not arg:
        return NLTask()
    try:
        knobs = json.loads(arg)
    except json.JSONDecodeError as e:
        raise ValueError(f"organism-nl takes a JSON object of task knobs after ':', e.g. "
                         f"'organism-nl:{{\"min_steps\": 5, \"max_steps\": 6}}'; got {arg!r} ({e})") from None
    return NLTask(NLTaskConfig.from_dict(knobs))


def register() -> None:
    from interp.organism_nl.zoo import ORDER, PREFIX, member_path

    register_models(PREFIX, member_path, lambda: [PREFIX + n for n in ORDER], task="organism-nl")
    register_task("organism-nl", _task, "chains of assignments mod 10 in English with <think> reasoning; "
                  "`organism-nl:{json NLTaskConfig}` for shifts")
