"""Where the shipped zoo lives and what its members are called (`organism/<name>`, seed replicas
`organism/<member>-seed<k>`)."""

from __future__ import annotations

import re
from pathlib import Path

ZOO_DIR = Path(__file__).parent / "zoo"
ORGANISM_PREFIX = "organism/"
ORIGINALS: tuple[str, ...] = ("base-s", "base-m", "base-l", "sft", "rl", "dpo", "rlsf", "dpo-teacher")
# Seed replicas: the same recipes with another seed (the originals are seed 0); a post-trained replica starts
# from its own seed's base (sft-seed1 from base-s-seed1).
REPLICATED: tuple[str, ...] = ("base-s", "sft", "rl", "dpo")
REPLICA_SEEDS: tuple[int, ...] = (1, 2)
_REPLICA = re.compile(r"^(?P<member>.+)-seed(?P<seed>\d+)$")


def replica_name(member: str, seed: int) -> str:
    """`sft`, 1 -> `sft-seed1`; seed 0 is the original member itself."""
    member = member.removeprefix(ORGANISM_PREFIX)
    return member if seed == 0 else f"{member}-seed{seed}"


def split_replica(name: str) -> tuple[str, int]:
    """`organism/rl-seed2` -> (`rl`, 2); a name without a seed suffix is seed 0."""
    short = name.removeprefix(ORGANISM_PREFIX)
    m = _REPLICA.match(short)
    return (m["member"], int(m["seed"])) if m else (short, 0)


REPLICAS: tuple[str, ...] = tuple(replica_name(m, s) for s in REPLICA_SEEDS for m in REPLICATED)
ZOO_NAMES: tuple[str, ...] = ORIGINALS + REPLICAS


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


__all__ = ["ORGANISM_PREFIX", "ORIGINALS", "REPLICAS", "REPLICATED", "REPLICA_SEEDS", "ZOO_DIR", "ZOO_NAMES",
           "organism_path", "replica_name", "split_replica"]
