"""Where the shipped zoo lives and what its members are called (`organism/<name>`)."""

from __future__ import annotations

from pathlib import Path

ZOO_DIR = Path(__file__).parent / "zoo"
ORGANISM_PREFIX = "organism/"
ZOO_NAMES: tuple[str, ...] = ("base-s", "base-m", "base-l", "sft", "rl", "dpo")


def organism_path(name: str) -> Path:
    """Folder of a zoo member given `organism/<name>` or `<name>`; a clear error for unknown names."""
    short = name.removeprefix(ORGANISM_PREFIX)
    if short not in ZOO_NAMES:
        import difflib

        near = difflib.get_close_matches(short, ZOO_NAMES, n=3, cutoff=0.3)
        hint = f" Did you mean {', '.join(ORGANISM_PREFIX + n for n in near)}?" if near else ""
        raise ValueError(f"unknown organism {name!r}.{hint} The zoo holds: "
                         f"{', '.join(ORGANISM_PREFIX + n for n in ZOO_NAMES)}")
    path = ZOO_DIR / short
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"organism {ORGANISM_PREFIX + short} is not trained yet: {path} has no "
                                f"config.json. Train it with `interp organism train {short}`")
    return path


__all__ = ["ORGANISM_PREFIX", "ZOO_DIR", "ZOO_NAMES", "organism_path"]
