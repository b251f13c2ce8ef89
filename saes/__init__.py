"""Sparse autoencoders trained with sae-lens on harvested activations: see the SAE issue."""
