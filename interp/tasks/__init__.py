"""Tasks: what the core knows of a problem family (render, force a chain of thought, grade, name positions).

    import interp
    task = interp.task("organism")                  # or "jsonl:gsm8k.jsonl", "organism-nl"
    items = task.sample(200, seed=0)
    data = interp.tasks.task_dataset(model, task, items)          # ids + named positions + ground truth
"""

from interp.tasks.base import Grade, Item, Span, Task, TaskShift, require_items
from interp.tasks.encode import Encoded, SpanError, encode_item, encode_text, render_prompt, task_dataset

__all__ = ["Encoded", "Grade", "Item", "Span", "SpanError", "Task", "TaskShift", "encode_item", "encode_text", "render_prompt",
           "require_items", "task_dataset"]
