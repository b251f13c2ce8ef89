"""interp: what reasoning post-training changes inside a language model, and how that differs from scale.

    import interp
    pair = interp.load_pair("organism/base-s", "organism/sft")    # or two Hugging Face checkpoints
    task = interp.task("organism")
    res = interp.evaluate(pair.tuned, task, task.sample(100, seed=0))

Names are imported on first use (PEP 562), so `import interp` (and the CLI's `--help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Model": "interp.models", "ModelPair": "interp.models", "load": "interp.models", "load_pair": "interp.models",
    "task": "interp.registry", "task_names": "interp.registry",
    "evaluate": "interp.evaluation", "GenerationConfig": "interp.evaluation",
    "Item": "interp.tasks", "Task": "interp.tasks", "task_dataset": "interp.tasks",
    "harvest": "interp.activations", "ActivationStore": "interp.activations",
    "steer": "interp.steering", "Add": "interp.steering", "Subtract": "interp.steering",
    "ProjectOut": "interp.steering", "Clamp": "interp.steering", "SteeringVector": "interp.steering",
    "exact_patch": "interp.patching", "attribution_patch": "interp.patching", "logit_diff": "interp.patching",
}

if TYPE_CHECKING:
    from interp.activations import ActivationStore, harvest
    from interp.evaluation import GenerationConfig, evaluate
    from interp.models import Model, ModelPair, load, load_pair
    from interp.patching import attribution_patch, exact_patch, logit_diff
    from interp.registry import task, task_names
    from interp.steering import Add, Clamp, ProjectOut, SteeringVector, Subtract, steer
    from interp.tasks import Item, Task, task_dataset


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'interp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["ActivationStore", "Add", "Clamp", "GenerationConfig", "Item", "Model", "ModelPair", "ProjectOut",
           "SteeringVector", "Subtract", "Task", "attribution_patch", "evaluate", "exact_patch", "harvest", "load",
           "load_pair", "logit_diff", "steer", "task", "task_dataset", "task_names"]
