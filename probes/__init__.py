"""Linear probes on stored activations (sweeps, control tasks, save/load): see the activation-store issue."""
