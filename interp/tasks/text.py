"""Free-text reasoning read the way graders and step-level analyses need it: thinking blocks, the final
number, and steps.

Models that reason in the open (R1-style `<think> ... </think>`, GSM8K's `#### N`, MATH's `\\boxed{}`)
write answers as text, not as one token; these helpers find what a completion says and where
(character spans into the text, which `interp.tasks.encode` maps to token positions).

    t = split_thinking("<think>\\n3 + 4 = 7.\\n</think>\\n\\nThe answer is 7.")
    t.thinking, t.answer, t.closed            # '3 + 4 = 7.', 'The answer is 7.', True
    final_number("so she pays $1,200.50. #### 1200.5")   # '1200.5'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from interp.tasks.base import Span

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Thinking:
    """A completion split at its thinking block.

    `thinking` is the block's text (None when the text has no block; '' for an empty block), `answer` the
    text after the close tag (the whole text when there is no block; '' when the block is never closed).
    `closed` is False only for a block that is opened and never closed (the model ran out of tokens or never
    stopped thinking). Spans index the original text and exclude surrounding whitespace; `thinking_span` is
    None when there is no thinking text, and an empty answer has an empty `answer_span` where it would start."""

    thinking: str | None
    answer: str
    closed: bool
    thinking_span: Span | None
    answer_span: Span

    def to_dict(self) -> dict[str, Any]:
        return {"thinking": self.thinking, "answer": self.answer, "closed": self.closed,
                "thinking_span": list(self.thinking_span) if self.thinking_span is not None else None,
                "answer_span": list(self.answer_span)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Thinking:
        ts = d.get("thinking_span")
        return cls(d.get("thinking"), d["answer"], bool(d["closed"]), tuple(ts) if ts is not None else None,  # type: ignore[arg-type]
                   tuple(d["answer_span"]))  # type: ignore[arg-type]


def _strip_span(text: str, start: int, end: int) -> Span:
    """`[start, end)` narrowed to exclude leading and trailing whitespace (empty at `start` if all blank)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _locate(text: str, open: str, close: str) -> tuple[int, int | None] | None:
    """Where the thinking block's text starts and where its close tag starts (None if never closed), or
    None when the text has neither tag."""
    o = text.find(open)
    c = text.find(close)
    if o < 0 and c < 0:
        return None
    if o >= 0 and (c < 0 or c > o):
        start = o + len(open)
        c = text.find(close, start)
    else:  # a close tag with no open tag before it: the completion began inside the block
        start = 0
    return start, (c if c >= 0 else None)


def split_thinking(text: str, open: str = THINK_OPEN, close: str = THINK_CLOSE) -> Thinking:
    """Split `text` into its thinking block and the answer after it; never raises on model output.

    The block starts after the first `open` tag, or at the start of the text when a `close` tag comes with
    no `open` before it (R1-distilled chat templates put `<think>\\n` in the prompt, so the completion starts
    inside the block), and ends at the first `close` after that. Text before an `open` tag is ignored."""
    if not open or not close:
        raise ValueError("open and close tags must be non-empty strings, e.g. '<think>' and '</think>'")
    where = _locate(text, open, close)
    if where is None:
        a = _strip_span(text, 0, len(text))
        return Thinking(None, text[a[0]:a[1]], True, None, a)
    start, c = where
    if c is None:
        t = _strip_span(text, start, len(text))
        return Thinking(text[t[0]:t[1]], "", False, t if t[1] > t[0] else None, (len(text), len(text)))
    t = _strip_span(text, start, c)
    a = _strip_span(text, c + len(close), len(text))
    return Thinking(text[t[0]:t[1]], text[a[0]:a[1]], True, t if t[1] > t[0] else None, a)


# A number as written in prose: thousands separators only in groups of three (so "3,4,5" is three
# numbers), an optional decimal part; a leading minus is decided by what precedes it (see _numbers).
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####")
_FRAC = re.compile(r"^\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}$")
_LATEX_NOISE = re.compile(r"\\text\s*\{[^{}]*\}|\\(?:mathrm|textbf|mathbf)\s*\{([^{}]*)\}|\\[,;!: ]|\\\$|\\%|[$%]")


def _canonical(value: Fraction) -> str:
    """`3`, `-0.25`, or `1/3`: an integer, a terminating decimal without trailing zeros, else a fraction."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return f"{value.numerator}/{value.denominator}"
    s = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def normalize_number(text: str) -> str:
    """A canonical string for a written number, so equal values compare equal as strings.

    Removes thousands commas, `$`, `%`, surrounding spaces and a trailing period; keeps the sign; reads
    `a/b` and `\\frac{a}{b}`; `3.0`, `3` and `3.00` all give `3`, `0.50` gives `0.5`, `-1,200` gives
    `-1200`, `1/2` gives `0.5`, and `1/3` stays `1/3`. Raises ValueError on text that is not one number."""
    s = _LATEX_NOISE.sub(lambda m: m.group(1) or "", text).strip().rstrip(".").strip()
    m = _FRAC.match(s)
    if m:
        s = f"{m.group(1).strip()}/{m.group(2).strip()}"
    s = s.replace(",", "").replace("\u2212", "-")
    try:
        if "/" in s:
            num, _, den = s.partition("/")
            value = Fraction(Decimal(num.strip())) / Fraction(Decimal(den.strip()))
        else:
            d = Decimal(s)
            if not d.is_finite():
                raise InvalidOperation
            value = Fraction(d)
    except (InvalidOperation, ValueError, ZeroDivisionError):
        raise ValueError(f"not a number: {text!r} (expected e.g. '42', '-3.5', '1,200', '$7', '3/4')") from None
    return _canonical(value)


def numbers(text: str, start: int = 0, end: int | None = None) -> list[tuple[str, Span]]:
    """Every number in `text[start:end]`, normalised, with its span; a minus directly after a digit, letter or closing
    bracket is subtraction, not a sign (`10-3` holds 10 and 3; `x = -3` holds -3)."""
    end = len(text) if end is None else end
    out = []
    for m in _NUMBER.finditer(text, start, end):
        a, b = m.span()
        if text[a] == "-" and a > 0 and (text[a - 1].isalnum() or text[a - 1] in ")]}"):
            a += 1
        if not any(ch.isdigit() for ch in text[a:b]):
            continue
        out.append((normalize_number(text[a:b]), (a, b)))
    return out


def _boxed_contents(text: str, start: int, end: int) -> list[Span]:
    """Spans of the contents of each `\\boxed{...}` in `text[start:end]` (nested braces balanced)."""
    out = []
    for m in _BOXED.finditer(text, start, end):
        depth, i = 1, m.end()
        while i < end and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((m.end(), i - 1))
    return out


def _final_in(text: str, start: int, end: int) -> tuple[str, Span] | None:
    """The final number of `text[start:end]`: the last `\\boxed{}`, else after the last `####`, else the
    last number."""
    for a, b in reversed(_boxed_contents(text, start, end)):
        s = _strip_span(text, a, b)
        nums = numbers(text, a, b)
        try:
            value = normalize_number(text[s[0]:s[1]])
        except ValueError:
            if nums:
                return nums[-1]
        else:  # the span runs over the digits (`\$18` -> `18`, `\frac{3}{4}` -> `3}{4`), not the markup
            return value, ((nums[0][1][0], nums[-1][1][1]) if nums else s)
    hashes = [m.end() for m in _HASHES.finditer(text, start, end)]
    if hashes:
        nums = numbers(text, hashes[-1], end)
        if nums:
            return nums[0]
    nums = numbers(text, start, end)
    return nums[-1] if nums else None


def _final(text: str, open: str, close: str) -> tuple[str, Span] | None:
    where = _locate(text, open, close)
    if where is not None and where[1] is not None:
        found = _final_in(text, where[1] + len(close), len(text))
        if found is not None:
            return found
    return _final_in(text, 0, len(text))


def final_number(text: str, open: str = THINK_OPEN, close: str = THINK_CLOSE) -> str | None:
    """The number a completion gives as its answer, normalised (`normalize_number`), or None if it has none.

    Where: the text after `close` when the text closes a thinking block (R1-style models restate and box
    the answer there), else (or when that part holds no number) the whole text. In that part, in priority
    order: the last `\\boxed{...}`, the number after the last `#### `, then the last number."""
    found = _final(text, open, close)
    return found[0] if found is not None else None


def number_span(text: str, open: str = THINK_OPEN, close: str = THINK_CLOSE) -> Span | None:
    """Where `final_number` found its number in `text` (the digits, sign and separators, not the braces of
    `\\boxed{}`): the span whose last character is the answer's last token."""
    found = _final(text, open, close)
    return found[1] if found is not None else None


# Words whose period does not end a sentence (lower-cased, without the period).
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie", "approx", "no",
    "fig", "eq", "cf", "al", "inc", "ltd", "co", "mt", "ft", "oz", "lb", "lbs", "hr", "hrs", "min", "mins",
    "sec", "secs", "km", "cm", "mm", "kg", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "a.m", "p.m", "u.s", "resp",
})
_LIST_MARKER = re.compile(r"\(?(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})[.)]")
_SENT_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")


def _ends_sentence(text: str, line_start: int, cut: int, m: re.Match[str]) -> bool:
    """Whether the punctuation matched by `m` ends the sentence begun at `cut`: not after a list marker
    (`1.`, `b)`), an abbreviation or an initial, and followed by something that can start a sentence (not a
    lower-case word)."""
    if _LIST_MARKER.fullmatch(text[cut:m.end()].strip()):
        return False
    i = m.start()
    j = i
    while j > line_start and (text[j - 1].isalpha() or text[j - 1] == "."):
        j -= 1
    word = text[j:i].lower()
    if text[i] == "." and word and (word in ABBREVIATIONS or (len(word) == 1 and text[j].isupper())):
        return False
    k = m.end()
    while k < len(text) and text[k] in " \t":
        k += 1
    return k >= len(text) or not text[k].islower()


def steps(text: str) -> list[Span]:
    """Spans of the reasoning steps of free text: each non-empty line, split further into sentences.

    A sentence ends at `.`, `!` or `?` (closing quotes or brackets included) followed by whitespace and not
    by a lower-case word, and not after an abbreviation (`e.g.`, `Dr.`, `approx.`) or an initial, so `3.5`,
    `$2.50` and `1.` inside `1.5` never split. Spans exclude surrounding whitespace. This is the segmentation
    Lanham et al. (arXiv 2307.13702) use for early answering and adding mistakes."""
    out: list[Span] = []
    pos = 0
    for line in text.splitlines(keepends=True):
        ls, le = pos, pos + len(line)
        pos = le
        cut = ls
        for m in _SENT_END.finditer(text, ls, le):
            if _ends_sentence(text, ls, cut, m):
                s = _strip_span(text, cut, m.end())
                if s[1] > s[0]:
                    out.append(s)
                cut = m.end()
        s = _strip_span(text, cut, le)
        if s[1] > s[0]:
            out.append(s)
    return out


__all__ = ["ABBREVIATIONS", "THINK_CLOSE", "THINK_OPEN", "Thinking", "final_number", "normalize_number",
           "number_span", "numbers", "split_thinking", "steps"]
