"""Chain-of-thought faithfulness: text interventions (Lanham et al.) and step-level activation patching."""
