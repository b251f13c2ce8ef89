"""`interp bench ...`: every benchmark of the toolkit, in one place.

Benchmarks wire the organism (prompts, zoo models), probes, SAEs and analyses together, so they live with
the CLI, the one layer allowed to import all of them; the core `interp` never imports this package.

- `checkpoints`: the one builder of random-init checkpoints (architecture, size, tokenizer) that every
  benchmark and scripts/gpu_check.py use, plus the HookedTransformer anchor.
- `harvest`, `layers`, `patch`, `steer`, `sae`, `routing`: one module per benchmark. Each exposes a function returning
  `(rows, figures)` (or a dict of figures) and imports its heavy libraries inside functions.
- `commands`: the `interp bench <name>` commands, registered on `interp.cli.common.bench_app` (`bench routing`
  registers in `interp/cli/when.py`, beside `analyze routing`).

A benchmark prints a table, then as its last line one JSON object of ratios measured against a baseline
in the same run (`interp.benchmark.best_wall_and_cpu`: wall and CPU time, interleaved, best of repeats).
To add one: write `interp/cli/bench/<name>.py`, register its command in `commands.py` (imports inside the
command body, as in `interp/cli/__init__.py`'s pattern), and build any model with `checkpoints`.
"""
