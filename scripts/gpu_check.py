"""One prepared check of the GPU path, run on a lent GPU machine in one call (see docs/real-pairs.md).

Parts, most wanted first; each writes its numbers to $OUT/gpu_check.json as it finishes, and no part starts
once `GPU_CHECK_BUDGET_S` (default 480) seconds have gone, so a run cut short still brings back what it measured:

1. `pair_report`: the pair report (`interp report --base --tuned --task organism-nl`) on a random-init base of
   Qwen2.5-1.5B's shape carrying the natural-language organism's byte-level BPE and a tuned copy with known
   noise per layer (`interp.cli.bench.layers.build_pair`), bf16 on CUDA: each section's time, peak GPU and
   resident memory, or why it did not run; and the layers section's weight change against the injected one.
2. `bench_harvest`: `interp bench harvest --device cuda` (the overlapped writer against a plain forward).
3. `nl_report`: the natural-language organism's own pair (base vs sft) moved to the GPU: each section's cost
   and its first sentence, to set beside the CPU report.
4. `big_model`: steering and harvest speed and exactness on the 1.5B shape (`bench_steer`, no-op hooks).
5. `zoo_verbosity`: the first zoo's verbosity point on CUDA against figures/verbosity.json.

`GPU_CHECK_SMALL=1` runs tiny shapes on CPU (a dry run of every part); `GPU_CHECK_PARTS=a,b` runs only those.
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
BUDGET_S = float(os.environ.get("GPU_CHECK_BUDGET_S", "480"))
T0 = time.perf_counter()


def seconds_left() -> float:
    return BUDGET_S - (time.perf_counter() - T0)


def save(res: dict) -> None:
    """The numbers so far, where the device tool brings them back (written after every step)."""
    (OUT / "gpu_check.json").write_text(json.dumps(res, indent=1))


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


# the pair report's sections, cheapest first on the 1.5B shape (so a cut-short run measures the most of them)
PAIR_SECTIONS = ("calibration", "zoo", "shift", "routing", "verbosity", "reasoning_direction", "latent",
                 "faithfulness", "compute", "sae", "layers")


def report_costs(res: dict, key: str, config, out: Path, reserve_s: float, sentences: int = 0) -> None:
    """Run the report's sections one at a time into `out` (the report merges them; the models stay loaded
    between them), each with its time, peak memory and skip reason; stop starting sections once fewer than
    `reserve_s` seconds of the budget are left."""
    import dataclasses

    from analyses.report import Section, SectionsFailed, build_report, unload_models

    costs = res[key]["sections"] = {}
    for name in PAIR_SECTIONS:
        if seconds_left() < reserve_s:
            costs[name] = {"not_started": f"{seconds_left():.0f} s of the budget left"}
            continue
        t0 = time.perf_counter()
        try:
            try:
                build_report(out, config=dataclasses.replace(config, sections=(name,)), results=None, jobs=1,
                             keep_models=True)
            except SectionsFailed:
                pass  # the section is in report.json with its traceback
            data = json.loads((out / "report.json").read_text())
            s = Section.from_dict(data["sections"][data["section_names"].index(name)])
            costs[name] = {"seconds": s.seconds, "peak_gpu_gb": round(s.peak_gpu_bytes / 1e9, 2),
                           "peak_rss_gb": round(s.peak_rss_bytes / 1e9, 2), "skipped": s.skipped[:300],
                           "sentences": list(s.sentences[:sentences]), "error": s.error[-2000:]}
        except Exception as e:  # noqa: BLE001 (a failing section must not hide the others' numbers)
            import traceback

            traceback.print_exc()
            costs[name] = {"error": f"{type(e).__name__}: {e}"[:500], "seconds": round(time.perf_counter() - t0, 1)}
        save(res)
    unload_models()


def pair_report(res: dict) -> None:
    """The pair report on a random-init Qwen2.5-1.5B-shaped pair with the natural-language tokenizer."""
    from analyses.report import ReportConfig
    from interp.cli.bench.checkpoints import SHAPES
    from interp.cli.bench.layers import build_pair, injected_change

    shape = SHAPES["qwen2-tiny" if SMALL else "qwen2-1.5b"][1]
    folder = Path(tempfile.mkdtemp(prefix="gpu-pair-"))
    t0 = time.perf_counter()
    base, tuned = build_pair(folder, shape, tokenizer="organism-nl", device=DEVICE, model_max_length=512)
    n_per_step, new_tokens = 2, 48  # random-init models never stop: every generation runs to new_tokens
    res["pair_report"] = {"shape": "qwen2-tiny" if SMALL else "qwen2-1.5b", "dtype": "bfloat16",
                          "build_seconds": round(time.perf_counter() - t0, 1), "n_per_step": n_per_step,
                          "max_new_tokens": new_tokens}
    save(res)
    out = OUT / "pair_report"
    config = ReportConfig.pair(str(base), str(tuned), "organism-nl", n_per_step=n_per_step, png=False,
                               max_new_tokens=new_tokens, device=DEVICE, dtype="bfloat16")
    report_costs(res, "pair_report", config, out, reserve_s=150)
    layers = out / "layers_tuned.json"
    if layers.is_file():  # the known answer: the noise build_pair put into each layer
        per_layer = json.loads(layers.read_text())["weights"]["per_layer"]
        n = len(per_layer)
        err = max(abs(m - injected_change(i, n)) / injected_change(i, n) for i, m in enumerate(per_layer))
        res["pair_report"]["layers_weight_change_max_relative_error_vs_injected"] = round(err, 5)
    for f in out.glob("*.json"):  # keep the sections' JSON, not the figures
        if f.name != "report.json":
            f.unlink()


def bench_harvest(res: dict) -> None:
    """`interp bench harvest --device cuda`: the last line of its output is the JSON of its ratios."""
    import subprocess

    models = "organism/base-l,qwen2-tiny" if SMALL else "organism/base-l,qwen2-1.5b"
    cmd = [sys.executable, "-m", "interp.cli", "bench", "harvest", "--device", DEVICE, "--models", models,
           "--dtype", "bfloat16", "--gpt2-n", "64" if SMALL else "512", "--memory-n", "0", "--repeats", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30.0, seconds_left() - 60),
                          check=False, cwd=Path(__file__).resolve().parents[1])
    lines = proc.stdout.strip().splitlines()
    res["bench_harvest"] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
        "error": f"exit {proc.returncode}: {proc.stderr[-1500:]}"}


def nl_report(res: dict) -> None:
    """The natural-language organism's pair (base vs sft) on the GPU: each section's cost and first sentence."""
    from analyses.report import ReportConfig

    res["nl_report"] = {"pair": "organism-nl/base vs organism-nl/sft", "n_per_step": 20}
    config = ReportConfig.pair("organism-nl/base", "organism-nl/sft", n_per_step=20, png=False, device=DEVICE)
    report_costs(res, "nl_report", config, OUT / "nl_report", reserve_s=60, sentences=1)


def main() -> None:
    res: dict = {"device": DEVICE, "torch": torch.__version__, "budget_s": BUDGET_S}
    if DEVICE == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    import transformers

    res["transformers"] = transformers.__version__
    parts = {"pair_report": pair_report, "bench_harvest": bench_harvest, "nl_report": nl_report,
             "big_model": big_model, "zoo_verbosity": zoo_verbosity}
    chosen = os.environ.get("GPU_CHECK_PARTS", ",".join(parts)).split(",")
    unknown = sorted(set(chosen) - set(parts))
    if unknown:
        raise SystemExit(f"unknown GPU_CHECK_PARTS {unknown}; the parts are {', '.join(parts)}")
    for name in chosen:
        if seconds_left() < 30:
            res[f"{name}_not_started"] = f"{seconds_left():.0f} s of the {BUDGET_S:.0f} s budget left"
            continue
        t0 = time.perf_counter()
        try:
            parts[name](res)
        except Exception as e:  # report and go on: one failing part must not hide the others' numbers  # noqa: BLE001
            import traceback

            res[f"{name}_error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        res[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        save(res)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
