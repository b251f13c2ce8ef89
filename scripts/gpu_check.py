"""One short check of the GPU path, run on a lent GPU machine (see the README's "GPU" notes).

1. A random-init model of Qwen2.5-1.5B's shape (bf16, saved with the organism tokenizer so the organism's prompts
   are valid; built by `interp.cli.bench.checkpoints`, the benchmarks' one builder) loaded through `interp.load` on CUDA: steered vs unsteered batched generation (`bench_steer`),
   harvest of the last layer's residual stream vs a plain HF forward of the same batches, and exactness checks
   (a zero vector changes no logit; projecting out leaves no component along the direction).
2. The zoo's verbosity point on CUDA: sft's direction read again on the GPU and subtracted at every generated
   token on the test split, to compare with the CPU numbers in figures/verbosity.json.

Writes one JSON object (and prints it as the last line). `GPU_CHECK_SMALL=1` runs a tiny shape on CPU (a dry run).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SMALL = os.environ.get("GPU_CHECK_SMALL") == "1"
DEVICE = "cpu" if SMALL else "cuda"
OUT = Path(os.environ.get("OUT") or tempfile.mkdtemp())


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn) -> float:
    """Best-of-3 wall seconds (interp.benchmark.best_times), the GPU synchronised before the clock stops."""
    from interp.benchmark import best_times

    def synced() -> None:
        fn()
        sync()

    return best_times({"f": synced})["f"]


def build(folder: Path) -> None:
    """The random-init Qwen2.5-1.5B-shaped checkpoint (bf16, organism tokenizer), from the benchmarks' one builder."""
    from interp.cli.bench.checkpoints import CheckpointSpec, build_checkpoint

    spec = CheckpointSpec.named("qwen2-tiny" if SMALL else "qwen2-1.5b", dtype="bfloat16", model_max_length=512)
    build_checkpoint(folder, spec, device=DEVICE)


def big_model(res: dict) -> None:
    import interp
    from interp.cli.bench.steer import bench_steer
    from interp.organism.task import sample_problems
    from interp.steering import ProjectOut, SteeringVector, Subtract, steer

    folder = Path(tempfile.mkdtemp()) / "qwen2_1_5b_shape"
    t0 = time.perf_counter()
    build(folder)
    res["build_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    m = interp.load(folder, device=DEVICE, dtype=torch.bfloat16)
    res["load_seconds"] = round(time.perf_counter() - t0, 1)
    res["model"] = {"n_params": m.n_params, "n_layers": m.n_layers, "d_model": m.d_model, "device": str(m.device)}

    _, steer_fig = bench_steer(str(folder), n=64, new_tokens=48, repeats=3, device=DEVICE, dtype="bfloat16")
    res["bench_steer"] = steer_fig

    # the floor for steering at every layer: the same generation with a no-op torch hook on every decoder layer
    from interp.generate import left_pad

    tok = m.tokenizer
    ids, mask = left_pad([[tok.bos_token_id, *tok.convert_tokens_to_ids(p.prompt_tokens())]
                          for p in sample_problems(7, 64)], tok.pad_token_id)
    ids, mask = ids.to(m.device), mask.to(m.device)

    def gen() -> None:
        with torch.no_grad():
            m.hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=48, min_new_tokens=48, do_sample=False,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    t_plain = timed(gen)
    handles = [layer.register_forward_hook(lambda mod, a, out: None) for layer in m.hf.model.layers]
    t_noop = timed(gen)
    for h in handles:
        h.remove()
    res["noop_hook_every_layer_tokens_per_s_ratio"] = round(t_plain / t_noop, 3)

    # harvest one hook (last layer, every token, written to disk) vs a plain HF forward of the same batches
    from interp.cli.bench.harvest import organism_dataset, throughput

    probs = sample_problems(11, 64 if SMALL else 1024)
    ds = organism_dataset(m, probs)  # word by word: the random-init Qwen2 loads a Qwen2Tokenizer (wrong offsets)
    res["harvest"] = {"prompts": len(ds), "hook": f"blocks.{m.n_layers - 1}.hook_resid_post", "batch_size": 64}
    for store_dtype in ("bfloat16", "float32"):
        tps = throughput(m, ds, batch_size=64, repeats=3, anchors=False, dtype=store_dtype)
        res["harvest"][f"{store_dtype}_store"] = {
            "hf_forward_tokens_per_s": round(tps["hf_forward"][0], 1),
            "harvest_tokens_per_s": round(tps["harvest_one_hook"][0], 1),
            "harvest_speed_over_hf_forward": round(tps["harvest_one_hook"][0] / tps["hf_forward"][0], 3),
            "harvest_mid_speed_over_hf_forward": round(tps["harvest_mid_hook"][0] / tps["hf_forward"][0], 3)}

    # exactness on the device
    ids, mask = m.encode(["Q : a = 3 ; b = a + 4 ; c = b * 2 ; c ? A :"])
    with torch.no_grad():
        ref = m.hf(input_ids=ids, attention_mask=mask).logits
        zero = SteeringVector(torch.zeros(m.d_model), "blocks.0.hook_resid_post")
        with steer(m, [Subtract(zero, scale=1.0, where="all")]):
            same = bool(torch.equal(m.hf(input_ids=ids, attention_mask=mask).logits, ref))
        d = SteeringVector(torch.randn(m.d_model, generator=torch.Generator().manual_seed(1)), "blocks.0.hook_resid_post")
        # the component after the edit: read at the next layer's input (what the edit hands on)
        seen2: dict = {}

        def grab(mod, a, kw) -> None:
            seen2.setdefault("h", (a[0] if a else kw["hidden_states"]).detach())

        h2 = m.hf.model.layers[1].register_forward_pre_hook(grab, with_kwargs=True)
        with steer(m, [ProjectOut(d, where="all")]):
            m.hf(input_ids=ids, attention_mask=mask)
        h2.remove()
        comp = (seen2["h"].float() @ d.unit().to(m.device)).abs().max().item()
        norm = seen2["h"].float().norm(dim=-1).max().item()
    res["exact"] = {"zero_vector_logits_equal": same, "project_out_max_component": comp,
                    "project_out_component_over_norm": comp / norm}
    if DEVICE == "cuda":  # the 1.5B model goes with this function's scope; hand its cache back for the zoo part
        torch.cuda.empty_cache()


def zoo_verbosity(res: dict) -> None:
    import dataclasses

    import interp
    from analyses.verbosity.analysis import VerbosityConfig, directions, pair_items
    from analyses.verbosity.common import arrays, generate_graded, items_per_step
    from interp.steering import Subtract

    ref = json.loads(Path("figures/verbosity.json").read_text())
    cfg = VerbosityConfig.from_dict(ref["config"])
    chosen = ref["chosen"]
    m = interp.load(cfg.model, device=DEVICE)
    task = interp.task(cfg.task)
    dirs = directions(m, dataclasses.replace(cfg, variants=(chosen["variant"],)), task)
    vec = dirs[chosen["variant"]].get(chosen["hook"]).mean_diff
    prompts = {task.prompt(it) for it in pair_items(cfg, task)}
    test = [it for it in items_per_step(task, cfg.test_seed, cfg.n_test_per_step, cfg.steps)
            if task.prompt(it) not in prompts]
    out = {"direction_norm": vec.norm, "cpu_direction_norm": next(
        h["norm_mean_diff"] for h in ref["directions"][f"organism/sft/{chosen['variant']}"]["hooks"]
        if h["hook"] == chosen["hook"])}
    for name, ivs in (("unsteered", []), ("chosen", [Subtract(vec, scale=-chosen["gamma"], where="generated")])):
        a = arrays(generate_graded(m, task, test, ivs, max_new_tokens=cfg.max_new_tokens))
        out[name] = {"mean_tokens": float(a["tokens"].mean()), "accuracy": float(a["correct"].mean()),
                     "cpu_mean_tokens": ref["test"][name]["mean_tokens"], "cpu_accuracy": ref["test"][name]["accuracy"]}
    res["zoo_verbosity_on_device"] = out


def main() -> None:
    res: dict = {"device": DEVICE, "torch": torch.__version__}
    if DEVICE == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    import transformers

    res["transformers"] = transformers.__version__
    for name, fn in (("big_model", big_model), ("zoo_verbosity", zoo_verbosity)):
        t0 = time.perf_counter()
        try:
            fn(res)
        except Exception as e:  # report and go on: one failing part must not hide the other's numbers  # noqa: BLE001
            import traceback

            res[f"{name}_error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        res[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
        (OUT / "gpu_check.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
