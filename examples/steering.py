# %% [markdown]
# # Steering chains of thought shorter (activation-steered compression)
# Percent-format cells: run as a script (`python examples/steering.py`) or open as a notebook.
# One direction from (verbose, concise) pairs of sft's own chains, subtracted at every generated token:
# does sft write shorter chains, and does it stay right? Compared with a random direction of the same norm.

# %%
import os
import tempfile
from pathlib import Path

import plotly.graph_objects as go
import torch

import interp
from analyses.verbosity.analysis import pair_datasets, selector
from analyses.verbosity.common import arrays, generate_graded, items_per_step
from interp.plots import save_figure, style
from interp.steering import SteeringVector, Subtract
from interp.steering.directions import directions_from_texts, random_directions

torch.set_num_threads(1)
N = int(os.environ.get("TOUR_N", "100"))  # test problems per step count
OUT = Path(os.environ.get("TOUR_OUT", tempfile.mkdtemp()))
sft = interp.load("organism/sft")
task = interp.task("organism")

# %% [markdown]
# Directions: 50 problems written both ways; the residual stream after each layer at the `=` where each
# step's format is chosen (from step 2 on), verbose minus concise; AUROC on held-out pairs vs random.

# %%
pairs = task.sample(50, 3_000_017, min_steps=2, max_steps=4)
verbose, concise = pair_datasets(sft, task, pairs)
hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(sft.n_layers)]
dirs = directions_from_texts(sft, verbose, concise, hooks, selector("decision", 4))
for h in dirs.hooks:
    print(f"{h.hook}: held-out AUROC {h.auroc_mean_diff:.2f} (random {h.auroc_random:.2f}), norm {h.mean_diff.norm:.1f}")
vec = dirs.get(hooks[-1]).mean_diff
vec.save(OUT / "verbosity_direction")  # safetensors + JSON (hook, model checksum, provenance)
vec = SteeringVector.load(OUT / "verbosity_direction")

# %% [markdown]
# Steer: subtract gamma x direction at every generated token, against a random direction of the same norm.

# %%
problems = items_per_step(task, 3_200_023, N, (1, 2, 3, 4))
rand = SteeringVector(random_directions(sft.d_model, vec.norm, 1, seed=0)[0], vec.hook, sft.name, sft.checksum,
                      method="random")
fig = go.Figure()
for name, v in (("verbosity direction", vec), ("random direction", rand)):
    rows = []
    for gamma in (0.0, 0.25, 0.5, 0.625):
        a = arrays(generate_graded(sft, task, problems, [Subtract(v, scale=gamma, where="generated")] if gamma else []))
        rows.append((gamma, a["tokens"].mean(), a["correct"].mean()))
        print(f"{name}, gamma {gamma}: {a['tokens'].mean():.1f} CoT tokens, accuracy {a['correct'].mean():.2f}")
    fig.add_trace(go.Scatter(x=[r[1] for r in rows], y=[r[2] for r in rows], text=[f"gamma {r[0]}" for r in rows],
                             mode="lines+markers", name=name))
style(fig, "sft: chain length vs accuracy under steering", "mean CoT tokens", "accuracy")
save_figure(fig, OUT / "steering_length_vs_accuracy", png=False)
