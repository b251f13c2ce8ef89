"""The natural-language model organism: English multi-step arithmetic, a byte-level BPE tokenizer trained on
the task's text, small Qwen2 models, and R1-style `<think> ... </think>` reasoning.

Members load by name (`interp.load("organism-nl/sft")`), the task by `interp.task("organism-nl")`; the
recipes and targets are in `interp.organism_nl.zoo`.
"""
