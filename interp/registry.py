"""Names the core does not own: model-name resolvers (`organism/base-s`) and tasks (`organism`), added by
plugins.

A plugin is a function listed under the `interp.plugins` entry-point group (pyproject.toml) that calls
`register_models` and `register_task`; plugins are loaded on the first lookup, so `import interp` stays
free of the organism and of any other task. Code outside the package may register directly.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

ModelResolver = Callable[[str], Path]
TaskFactory = Callable[[str], Any]

_MODELS: dict[str, tuple[ModelResolver, Callable[[], list[str]]]] = {}
_DEFAULT_TASKS: dict[str, str] = {}
_TASKS: dict[str, tuple[TaskFactory, str]] = {}
_loaded = False


def register_models(prefix: str, resolve: ModelResolver, names: Callable[[], list[str]],
                    task: str | None = None) -> None:
    """Names starting with `prefix` (e.g. `organism/`) resolve to a checkpoint folder through `resolve`;
    `names()` lists them for error messages; `task` is the task these models are evaluated on by default."""
    if not prefix.endswith("/"):
        raise ValueError(f"a model prefix ends in '/', e.g. 'organism/'; got {prefix!r}")
    _MODELS[prefix] = (resolve, names)
    if task is not None:
        _DEFAULT_TASKS[prefix] = task


def default_task(model: str) -> str | None:
    """The task registered with the model's name prefix (`organism/sft` -> `organism`), if any."""
    load_plugins()
    return next((t for prefix, t in _DEFAULT_TASKS.items() if model.startswith(prefix)), None)


def register_task(name: str, factory: TaskFactory, help: str = "") -> None:
    """`interp.task(name)` or `interp.task(name + ':' + arg)` calls `factory(arg)` (arg '' when absent)."""
    _TASKS[name] = (factory, help)


def load_plugins() -> None:
    """Run every `interp.plugins` entry point once (each registers its names)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in entry_points(group="interp.plugins"):
        ep.load()()


def model_resolver(name: str) -> ModelResolver | None:
    """The resolver whose prefix starts `name`, if any."""
    load_plugins()
    for prefix, (resolve, _) in _MODELS.items():
        if name.startswith(prefix):
            return resolve
    return None


def model_names() -> list[str]:
    """Every registered model name (for messages and `interp info`)."""
    load_plugins()
    return [n for _, names in _MODELS.values() for n in names()]


def task_names() -> dict[str, str]:
    load_plugins()
    return {n: h for n, (_, h) in _TASKS.items()}


def task(spec: str) -> Any:
    """A task by name: `organism`, `organism-nl`, `jsonl:path/to/file.jsonl`, ... (see `task_names()`)."""
    load_plugins()
    name, _, arg = spec.partition(":")
    if name not in _TASKS:
        near = difflib.get_close_matches(name, list(_TASKS), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        known = "; ".join(f"{n} ({h})" if h else n for n, (_, h) in _TASKS.items()) or "none registered"
        raise ValueError(f"unknown task {spec!r}.{hint} Known tasks: {known}")
    return _TASKS[name][0](arg)


__all__ = [
    "default_task",
    "load_plugins",
    "model_names",
    "model_resolver",
    "register_models",
    "register_task",
    "task",
    "task_names",
]
