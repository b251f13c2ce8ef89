"""The layers hold: the import-linter contracts in pyproject.toml pass, they list every core module, and
importing the core leaves the organism, probes, saes and analyses unimported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
NOT_CORE = {"cli", "organism", "organism_nl"}


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_linter_contracts_are_kept() -> None:
    r = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports; raise SystemExit(lint_imports())"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "3 kept, 0 broken" in r.stdout


def test_every_core_module_is_under_the_core_contract() -> None:
    """A new module in interp/ must be listed as core (or be part of the CLI or an organism), so the
    contract cannot silently skip it."""
    listed = {m.removeprefix("interp.") for m in contracts()[0]["source_modules"]}
    present = {p.stem if p.is_file() else p.name for p in (ROOT / "interp").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert present - NOT_CORE == listed, (sorted(present - NOT_CORE - listed), sorted(listed - present))


def test_importing_the_core_imports_no_organism_probes_saes_or_analyses() -> None:
    code = ("import sys, interp, interp.models, interp.activations, interp.steering, interp.patching, interp.tasks, "
            "interp.evaluation, interp.positions, interp.scoring\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('probes', 'saes', 'analyses') "
            "or m.startswith(('interp.organism', 'interp.cli')))\n"
            "print(bad); raise SystemExit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


def test_plain_import_interp_is_light() -> None:
    """`import interp` defers torch and transformers to first use (PEP 562), so the CLI starts at once."""
    code = "import sys, interp; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
