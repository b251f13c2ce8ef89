"""Writes interp/tasks/data/gsm_synth.jsonl: GSM8K-format word problems of our own, for tests and examples.

Each line is `{"question": ..., "answer": ...}` exactly as in GSM8K: the answer is a worked solution, one
calculation per line with a `<<a*b=c>>` calculator annotation, ending in `#### N`. Problems take 2 to 4
arithmetic steps over multi-digit numbers, every intermediate value a positive integer. Seeded: running
it again writes the same bytes (`python scripts/make_gsm_synth.py [--n 200] [--seed 0] [--out PATH]`).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Mark", "Alexis", "Tina", "Randy", "Joy", "Ken",
         "Marie", "Carlos", "Priya", "Omar", "Lena", "Hiro", "Sofia", "Diego"]
PRONOUN = {"Natalia": "she", "Weng": "she", "Betty": "she", "Julie": "she", "James": "he", "Albert": "he",
           "Mark": "he", "Alexis": "she", "Tina": "she", "Randy": "he", "Joy": "she", "Ken": "he", "Marie": "she",
           "Carlos": "he", "Priya": "she", "Omar": "he", "Lena": "she", "Hiro": "he", "Sofia": "she", "Diego": "he"}
ITEMS = ["apples", "stickers", "marbles", "pencils", "cookies", "stamps", "books", "shells", "cards", "beads"]
CONTAINERS = ["boxes", "bags", "crates", "jars", "packs"]


class Chain:
    """A worked solution being written: each `calc` records one step as GSM8K writes it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def calc(self, a: int, op: str, b: int, text: str) -> int:
        """Compute `a op b`, append `text` with `{expr}` filled as `a op b = <<a op b=c>>c`; return c."""
        c = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        if op == "/" and a % b:
            raise ValueError(f"{a} / {b} is not an integer")
        if c <= 0:
            raise ValueError(f"{a} {op} {b} = {c} is not positive")
        self.lines.append(text.format(expr=f"{a}{op}{b} = <<{a}{op}{b}={c}>>{c}"))
        return c


def collect(rng: random.Random, n_steps: int) -> tuple[str, Chain, int]:
    """Someone collects items over several days: a start amount, then more, some given away, some doubled."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    he = PRONOUN[name]
    ch = Chain()
    x = rng.randint(12, 95)
    q = [f"{name} has {x} {item}."]
    plans = rng.sample(["buy", "give", "times", "find"], n_steps)
    for i, p in enumerate(plans):
        if p == "buy":
            k = rng.randint(11, 60)
            q.append(f"{he.capitalize()} buys {k} more {item}.")
            x = ch.calc(x, "+", k, f"After buying more, {name} has {{expr}} {item}.")
        elif p == "find":
            k = rng.randint(10, 45)
            q.append(f"Then {he} finds {k} {item} in a drawer.")
            x = ch.calc(x, "+", k, f"After finding some, {he} has {{expr}} {item}.")
        elif p == "give":
            k = rng.randint(5, max(6, x - 5))
            q.append(f"{he.capitalize()} gives {k} {item} to a friend.")
            x = ch.calc(x, "-", k, f"After giving some away, {he} has {{expr}} {item}.")
        else:
            k = rng.randint(2, 4)
            word = {2: "doubles", 3: "triples", 4: "quadruples"}[k]
            q.append(f"Then {he} {word} the number of {item} {he} has.")
            x = ch.calc(x, "*", k, f"{name} then has {{expr}} {item}.")
    q.append(f"How many {item} does {name} have now?")
    return " ".join(q), ch, x


def shop(rng: random.Random, n_steps: int) -> tuple[str, Chain, int]:
    """A purchase: a number of packs at a unit price, optional extra items, a discount, change from a bill."""
    name, item, box = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    he = PRONOUN[name]
    ch = Chain()
    n, price = rng.randint(3, 24), rng.randint(12, 48)
    q = [f"{name} buys {n} {box} of {item} for ${price} each."]
    total = ch.calc(n, "*", price, f"The {box} cost {{expr}} dollars.")
    if n_steps >= 3:
        m, p2 = rng.randint(2, 9), rng.randint(15, 70)
        q.append(f"{he.capitalize()} also buys {m} notebooks for ${p2} each.")
        extra = ch.calc(m, "*", p2, "The notebooks cost {expr} dollars.")
        total = ch.calc(total, "+", extra, f"Together {he} spends {{expr}} dollars.")
    if n_steps in (2, 4):
        coupon = rng.randint(10, min(95, total - 1))
        q.append(f"{he.capitalize()} has a coupon for ${coupon} off the whole purchase.")
        total = ch.calc(total, "-", coupon, f"With the coupon {he} pays {{expr}} dollars.")
    q.append(f"How much does {name} pay in dollars?")
    return " ".join(q), ch, total


def share(rng: random.Random, n_steps: int) -> tuple[str, Chain, int]:
    """Items packed in containers, some added, then shared equally among a group."""
    name, item, box = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    he = PRONOUN[name]
    ch = Chain()
    people = rng.randint(3, 12)
    per = rng.randint(12, 40)
    q = [f"{name} has {per} {box} with"]
    if n_steps == 2:
        size = people * rng.randint(2, 9)
        q[0] += f" {size} {item} in each."
        x = ch.calc(per, "*", size, f"{name} has {{expr}} {item}.")
    else:
        size = rng.randint(11, 30)
        q[0] += f" {size} {item} in each."
        x = ch.calc(per, "*", size, f"{name} has {{expr}} {item}.")
        extra = people - x % people + people * rng.randint(1, 5)
        q.append(f"{he.capitalize()} gets {extra} more {item} from a neighbour.")
        x = ch.calc(x, "+", extra, f"With the neighbour's {item} {he} has {{expr}} {item}.")
        if n_steps == 4:
            keep = people * rng.randint(1, max(1, x // people // 3))
            q.append(f"{he.capitalize()} keeps {keep} {item} for {'her' if he == 'she' else 'him'}self.")
            x = ch.calc(x, "-", keep, f"That leaves {{expr}} {item} to share.")
    what = "the rest" if n_steps == 4 else "them all"
    q.append(f"{he.capitalize()} shares {what} equally among {people} friends. How many {item} does each friend get?")
    x = ch.calc(x, "/", people, f"Each friend gets {{expr}} {item}.")
    return " ".join(q), ch, x


def trip(rng: random.Random, n_steps: int) -> tuple[str, Chain, int]:
    """Distance from speed and time over several legs, optionally a return leg subtracted from a target."""
    name = rng.choice(NAMES)
    he = PRONOUN[name]
    ch = Chain()
    s1, h1 = rng.randint(35, 75), rng.randint(2, 6)
    q = [f"{name} drives at {s1} miles per hour for {h1} hours."]
    d = ch.calc(s1, "*", h1, "The first part of the trip is {expr} miles.")
    if n_steps >= 3:
        s2, h2 = rng.randint(20, 65), rng.randint(2, 5)
        q.append(f"Then {he} drives at {s2} miles per hour for {h2} more hours.")
        d2 = ch.calc(s2, "*", h2, "The second part is {expr} miles.")
        d = ch.calc(d, "+", d2, f"{he.capitalize()} drives {{expr}} miles in all.")
    if n_steps in (2, 4):
        goal = d + rng.randint(25, 400)
        q.append(f"The whole journey is {goal} miles. How many miles are left to drive?")
        d = ch.calc(goal, "-", d, f"{he.capitalize()} still has {{expr}} miles to go.")
    else:
        q.append(f"How many miles does {name} drive?")
    return " ".join(q), ch, d


def wages(rng: random.Random, n_steps: int) -> tuple[str, Chain, int]:
    """Earnings from hours at a rate over days, plus a bonus, minus expenses."""
    name = rng.choice(NAMES)
    he = PRONOUN[name]
    ch = Chain()
    rate, hours, days = rng.randint(11, 35), rng.randint(3, 9), rng.randint(3, 14)
    q = [f"{name} earns ${rate} an hour and works {hours} hours a day for {days} days."]
    daily = ch.calc(rate, "*", hours, f"{he.capitalize()} earns {{expr}} dollars a day.")
    total = ch.calc(daily, "*", days, f"Over {days} days {he} earns {{expr}} dollars.")
    if n_steps >= 3:
        bonus = rng.randint(25, 250)
        q.append(f"{he.capitalize()} also gets a bonus of ${bonus}.")
        total = ch.calc(total, "+", bonus, f"With the bonus {he} has {{expr}} dollars.")
    if n_steps == 4:
        rent = rng.randint(40, total - 10)
        q.append(f"{he.capitalize()} then pays ${rent} for rent.")
        total = ch.calc(total, "-", rent, f"After rent {he} has {{expr}} dollars.")
    q.append(f"How many dollars does {name} have{' left' if n_steps == 4 else ''}?")
    return " ".join(q), ch, total


TEMPLATES: list[Callable[[random.Random, int], tuple[str, Chain, int]]] = [collect, shop, share, trip, wages]


def problem(rng: random.Random) -> dict[str, str]:
    """One GSM8K-format record with 2 to 4 steps (retried when a draw makes a non-positive or fractional value)."""
    while True:
        n_steps = rng.randint(2, 4)
        make = rng.choice(TEMPLATES)
        try:
            question, chain, answer = make(rng, n_steps)
        except ValueError:
            continue
        if len(chain.lines) != n_steps:
            raise AssertionError(f"{make.__name__} wrote {len(chain.lines)} steps for n_steps={n_steps}")
        return {"question": question, "answer": "\n".join(chain.lines) + f"\n#### {answer}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "interp" / "tasks" / "data" / "gsm_synth.jsonl")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < args.n:
        p = problem(rng)
        if p["question"] not in seen:
            seen.add(p["question"])
            rows.append(p)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} problems to {args.out} ({args.out.stat().st_size / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
