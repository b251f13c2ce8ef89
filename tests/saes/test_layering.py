"""saes and probes never import each other: shared statistics live in interp.stats."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages each module of `package` imports (absolute imports, any nesting level)."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize(("package", "forbidden"), [("saes", "probes"), ("probes", "saes")])
def test_saes_and_probes_do_not_import_each_other(package: str, forbidden: str) -> None:
    modules = imported_packages(package)
    assert modules, f"no modules found under {package}/"
    offenders = sorted(m for m, names in modules.items() if forbidden in names)
    assert not offenders, f"{offenders} import {forbidden}; take shared code from interp (e.g. interp.stats)"


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    # the scan must catch a lazy import too, or the test above could not fail on one
    tree = ast.parse("def f():\n    from probes import group_bootstrap\n")
    found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert found == {"probes"}
