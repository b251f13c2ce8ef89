"""Where fine-tuning acts (issue 5): weight change per layer and matrix, representation change (CKA,
cosine), logit lens, layer grafting, layer ablation and emulated fine-tuning for a base/post-trained
pair, one module per job; `analysis.run(config)` runs them all on the same problems."""
