# %% [markdown]
# # A tour of the model-organism zoo
# Percent-format cells: run as a script (`python examples/zoo_tour.py`) or open as a notebook.
# Does base-s hold reasoning it does not use, and does making the base bigger change that?

# %%
import os
import tempfile

import plotly.graph_objects as go
import torch

import interp
from interp.organism.evaluate import EvalConfig, evaluate
from interp.organism.task import TaskConfig, sample_problems
from interp.organism.tokenizer import digit_ids
from interp.plots import color_for, save_figure, style

N = int(os.environ.get("TOUR_N", "100"))  # problems per step count
base = interp.load("organism/base-s")
print(base)

# %% [markdown]
# Free vs forced chain of thought: the gap is the latent ability post-training can select.

# %%
free = evaluate(base, EvalConfig(steps=(3, 4), n_per_step=N))
forced = evaluate(base, EvalConfig(steps=(3, 4), n_per_step=N, force_cot=True))
for k in (3, 4):
    f, c = free.by_steps[k], forced.by_steps[k]
    print(f"{k} steps: free {f.accuracy:.2f} (CoT {f.cot_rate:.2f}) vs forced CoT {c.accuracy:.2f}")

# %% [markdown]
# Where is the answer decodable? The logit lens on the residual stream at the answer position,
# for direct answers of 2-step problems, read through the Bridge's hook names.

# %%
problems = sample_problems(0, N, TaskConfig(), n_steps=2)
tokens, _ = base.encode([p.prompt() for p in problems])  # same length: no padding
names = [f"blocks.{layer}.hook_resid_post" for layer in range(base.n_layers)]
with torch.no_grad():
    _, cache = base.bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
answers = torch.tensor(base.tokenizer.convert_tokens_to_ids([str(p.answer) for p in problems]))
digits = digit_ids(base.tokenizer)
lens = []
for name in names:
    resid = base.bridge.ln_final(cache[name][:, -1])
    logits = base.bridge.unembed(resid)
    pred = digits[logits[:, digits].argmax(-1)]
    lens.append(float((pred == answers).float().mean()))
print("logit-lens accuracy by layer:", [round(x, 2) for x in lens])

# %%
fig = go.Figure(go.Scatter(x=list(range(base.n_layers)), y=lens, mode="lines+markers",
                           line=dict(color=color_for("base-s"))))
style(fig, "Logit lens: answer decodable by layer (2-step, base-s)", "layer", "accuracy")
out = os.environ.get("TOUR_OUT", tempfile.mkdtemp())
print(save_figure(fig, os.path.join(out, "logit_lens_base_s"), png=False))

# %% [markdown]
# Same question for the bigger bases: more parameters, same data.

# %%
for name in ("organism/base-m", "organism/base-l"):
    m = interp.load(name)
    r = evaluate(m, EvalConfig(steps=(3, 4), n_per_step=N))
    print(f"{name} ({m.n_params:,} params): 3-4-step accuracy {r.mean_over((3, 4), 'accuracy'):.2f}, "
          f"CoT rate {r.mean_over((3, 4), 'cot_rate'):.2f}")
