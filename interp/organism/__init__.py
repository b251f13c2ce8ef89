"""The model organism: a synthetic multi-step reasoning task, its tokenizer, training recipes and the zoo."""
