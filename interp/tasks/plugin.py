"""Registers the core's dataset task: `interp.task("jsonl:path/to/file.jsonl")`.

Listed under the `interp.plugins` entry point in pyproject.toml (`jsonl = "interp.tasks.plugin:register"`).
The argument is a path, the bare name of a shipped file (`jsonl:gsm_synth`), or a JSON object of
`JsonlConfig` fields (`jsonl:{"path": "test.jsonl", "format": "gsm8k", "chat": false, "think": true}`).
"""

from __future__ import annotations

import json
from typing import Any

from interp.registry import register_task


def jsonl_task(arg: str) -> Any:
    """The `JsonlTask` an `interp.task("jsonl:...")` argument names."""
    from interp.tasks.jsonl import JsonlConfig, JsonlTask

    arg = arg.strip()
    if not arg:
        raise ValueError("the jsonl task needs a file: interp.task('jsonl:path/to/file.jsonl'), "
                         "or 'jsonl:gsm_synth' for the shipped GSM8K-format sample")
    if arg.startswith("{"):
        try:
            options = json.loads(arg)
        except json.JSONDecodeError as e:
            raise ValueError(f"jsonl task options are not valid JSON ({e.msg} at column {e.colno}): {arg!r}") from None
        if not isinstance(options, dict):
            raise ValueError(f"jsonl task options must be a JSON object, got {arg!r}")
        return JsonlTask.from_config(JsonlConfig.from_dict(options))
    return JsonlTask(arg)


def register() -> None:
    register_task("jsonl", jsonl_task, "problems from a JSONL file (GSM8K or {prompt, answer}); "
                                       "`jsonl:gsm_synth` is the shipped sample")


__all__ = ["jsonl_task", "register"]
