# %% [markdown]
# # Probing for latent reasoning
# Percent-format cells: run as a script (`python examples/probing.py`) or open as a notebook.
# Does base-s compute the first intermediate value of a chain before it writes anything, and where?
# Harvest the residual stream at two named positions, fit probes with control tasks, transfer to sft.

# %%
import os
import tempfile
from pathlib import Path

import plotly.graph_objects as go
import torch

import interp
from interp.activations import Named, harvest
from interp.organism.dataset import problem_dataset
from interp.organism.task import TaskConfig, sample_problems
from interp.plots import save_figure, style
from probes import Probe, ProbeJobConfig, rows_for, run, score

torch.set_num_threads(1)
N = int(os.environ.get("TOUR_N", "100")) * 6  # problems
OUT = Path(os.environ.get("TOUR_OUT", tempfile.mkdtemp()))
base, sft = interp.load("organism/base-s"), interp.load("organism/sft")
problems = sample_problems(0, N, TaskConfig(min_steps=2, max_steps=4))
hooks = ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(base.n_layers)]
where = Named(("answer", "prompt.step1.end"))  # the prompt's last token; the `;` closing step 1's clause

# %% [markdown]
# Harvest: one store per model, streamed to disk shards with a manifest (resumable; `shard=(i, N)` splits it).

# %%
stores = {m.name: harvest(m, problem_dataset(problems, m), hooks, where, OUT / m.name.replace("/", "_"))
          for m in (base, sft)}
print(stores[base.name])

# %% [markdown]
# Probes: step 1's value at both positions, per layer, each with a control task (random labels per
# problem); train/test split by problem. Selectivity = accuracy - control accuracy.

# %%
job = ProbeJobConfig(store=str(stores[base.name].root), targets=("value.step1",), out=str(OUT / "probes"), n_boot=200)
result = run(job)
fig = go.Figure()
for label in ("answer", "prompt.step1.end"):
    cells = [c for c in result.cells if c.label == label]
    fig.add_trace(go.Scatter(x=[c.hook.split(".")[1] + ("pre" if "pre" in c.hook else "") for c in cells],
                             y=[c.selectivity for c in cells], name=f"step 1 value @ {label}", mode="lines+markers"))
    print(label, "selectivity by layer:", " ".join(f"{c.selectivity:+.2f}" for c in cells))
style(fig, "base-s: where is step 1's value linearly readable?", "layer", "selectivity")
save_figure(fig, OUT / "probe_selectivity_base_s", png=False)

# %% [markdown]
# Transfer: the base's probe at the last layer, applied to sft's activations on the same problems.

# %%
cell = result.cell(hooks[-1], "prompt.step1.end", "value.step1")
probe = Probe.load(cell.probe_path)
x, y, groups, _ = rows_for(stores[sft.name], cell.hook, cell.label, cell.target)
s, _ = score(probe, x, y, groups, n_boot=200, checksum=sft.checksum, allow_other_model=True)
print(f"base-s probe on base-s (held out): {cell.score.value:.2f}; on sft (all problems): {s.value:.2f} "
      f"[{s.ci[0]:.2f}, {s.ci[1]:.2f}]; control {cell.control.value:.2f}")
