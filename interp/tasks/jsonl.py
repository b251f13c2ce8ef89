"""A task read from a JSONL file: GSM8K's format or a generic `{"prompt", "answer"}` one, graded by number.

    task = interp.task("jsonl:gsm8k_test.jsonl")            # or "jsonl:gsm_synth" (the shipped file)
    task = task.for_model(model)                            # chat template and <think> chosen from the tokenizer
    res = interp.evaluate(model, task, task.sample(200, seed=0), GenerationConfig(chat=task.chat is True))

Formats (`format="auto"` picks by the first record's keys):
- `gsm8k`: `{"question": ..., "answer": "worked solution\\n#### N"}`. The solution before `####`, its
  `<<a*b=c>>` calculator annotations stripped, is the reference chain of thought; the annotations' results
  become `value.step{i}` (and all but the last `intermediate.step{i}`, the probe targets); `n_steps` is the
  number of solution lines. Prompts read `Question: {question}\\nAnswer:` as lm-evaluation-harness writes them
  (plain; a completion is graded up to a new `Question:`, where the harness stops) or the question alone (chat).
- `generic`: `{"prompt": ..., "answer": N}` with optional `id`, `meta` (an object merged into the item's
  metadata) and `chain` (a reference chain of thought; the `cot` format needs it). The prompt is used as is.

Answers must be numbers: grading compares `interp.tasks.text.final_number` of the completion with the
reference, both normalised. Forcing a direct answer (`GenerationConfig(force="direct")`) needs a finite
list of candidates and free-form numbers have none, so this task defines no `answer_candidates`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from interp.tasks.base import Grade, Item, Span, Task
from interp.tasks.text import (
    THINK_CLOSE,
    THINK_OPEN,
    final_number,
    normalize_number,
    number_span,
    numbers,
    split_thinking,
    steps,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from interp.models import Model

FileFormat = Literal["auto", "gsm8k", "generic"]
DATA_DIR = Path(__file__).resolve().parent / "data"
STEP_BY_STEP = "Let's think step by step."
MIN_COT_STEPS = 2
"""A completion without a thinking block counts as a chain of thought when it writes at least this many
steps (sentences or lines, `interp.tasks.text.steps`) before the one holding its answer."""
_ANNOTATION = re.compile(r"<<[^<>]*>>")
_ANNOTATION_RESULT = re.compile(r"<<[^<>]*=([^<>=]*)>>")
_GSM_PROMPT = "Question: {question}\nAnswer:"
_NEXT_QUESTION = "\nQuestion:"


@dataclass(frozen=True)
class JsonlConfig:
    """Which file and how to present it: `chat` (apply the model's chat template; None until `for_model`
    decides: yes when the tokenizer has a template) and `think` (write chains inside `<think> ... </think>`;
    None until `for_model` decides: yes when `<think>` is one token of the tokenizer; unbound means no)."""

    path: str
    format: FileFormat = "auto"
    chat: bool | None = None
    think: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JsonlConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown jsonl task option(s) {', '.join(unknown)}; options are {', '.join(sorted(known))}")
        if "path" not in d:
            raise ValueError('a jsonl task needs a "path", e.g. {"path": "gsm8k_test.jsonl", "format": "gsm8k"}')
        return cls(**dict(d))


class JsonlError(ValueError):
    """A JSONL file that cannot be read as a task; the message names the file and line."""


def resolve_path(path: str | Path) -> Path:
    """`path` as given, or a file shipped in `interp/tasks/data` when given its bare name (`gsm_synth`)."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    shipped = DATA_DIR / (p.name if p.suffix == ".jsonl" else p.name + ".jsonl")
    if p.parent == Path(".") and shipped.exists():
        return shipped
    names = sorted(f.stem for f in DATA_DIR.glob("*.jsonl"))
    raise FileNotFoundError(f"no JSONL file {str(path)!r} (relative to {Path.cwd()}); shipped files: "
                            f"{', '.join(names) or 'none'}")


def _as_number(s: str) -> int | float:
    """A normalised number as int when whole, else float (for metadata and probe targets)."""
    if "/" in s:
        num, den = s.split("/")
        return int(num) / int(den)
    return int(s) if re.fullmatch(r"-?\d+", s) else float(s)


def _number_or_error(value: Any, where: str, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise JsonlError(f"{where}: {what} must be a number, got {type(value).__name__} {value!r}")
    try:
        return normalize_number(str(value))
    except ValueError:
        raise JsonlError(f"{where}: {what} must be a number (the grader compares numbers), got {value!r}") from None


def _gsm_record(rec: Mapping[str, Any], where: str) -> dict[str, Any]:
    q, a = rec.get("question"), rec.get("answer")
    if not isinstance(q, str) or not isinstance(a, str):
        raise JsonlError(f'{where}: expected a GSM8K record {{"question": str, "answer": "solution ... #### N"}}; '
                         f"got keys {sorted(rec)}")
    if "####" not in a:
        raise JsonlError(f"{where}: a GSM8K answer ends in '#### N' (the final number); this one has no '####': "
                         f"{a[-60:]!r}")
    solution, _, final = a.rpartition("####")
    answer = _number_or_error(final.strip(), where, "the number after '####'")
    values = []
    for m in _ANNOTATION_RESULT.finditer(solution):
        try:
            values.append(_as_number(normalize_number(m.group(1))))
        except ValueError:  # an annotation that is not `expr=number` names no value; the record still reads
            continue
    chain = "\n".join(line.rstrip() for line in _ANNOTATION.sub("", solution).strip().splitlines() if line.strip())
    meta: dict[str, Any] = {"answer": _as_number(answer)}
    if chain:
        meta["n_steps"] = len(chain.splitlines())
    for i, v in enumerate(values, 1):
        meta[f"value.step{i}"] = v
        if i < len(values):
            meta[f"intermediate.step{i}"] = v
    return {"question": q, "answer": answer, "chain": chain or None, "meta": meta, "id": rec.get("id")}


def _generic_record(rec: Mapping[str, Any], where: str) -> dict[str, Any]:
    p = rec.get("prompt")
    if not isinstance(p, str) or "answer" not in rec:
        raise JsonlError(f'{where}: expected a generic record {{"prompt": str, "answer": number, optional "id", '
                         f'"meta", "chain"}}; got keys {sorted(rec)}')
    answer = _number_or_error(rec["answer"], where, '"answer"')
    extra = rec.get("meta", {})
    if not isinstance(extra, Mapping):
        raise JsonlError(f'{where}: "meta" must be an object, got {type(extra).__name__}')
    chain = rec.get("chain")
    if chain is not None and not isinstance(chain, str):
        raise JsonlError(f'{where}: "chain" must be a string (the reference chain of thought)')
    meta: dict[str, Any] = {"answer": _as_number(answer), **dict(extra)}
    if chain and "n_steps" not in meta:
        meta["n_steps"] = len(steps(chain))
    return {"prompt": p, "answer": answer, "chain": chain.strip() if chain else None, "meta": meta,
            "id": rec.get("id")}


def read_records(path: Path, fmt: FileFormat = "auto") -> tuple[Literal["gsm8k", "generic"], list[dict[str, Any]]]:
    """Every record of the file, checked and normalised, with the format chosen; errors name file and line."""
    if fmt not in ("auto", "gsm8k", "generic"):
        raise ValueError(f"format must be 'auto', 'gsm8k' or 'generic', got {fmt!r}")
    out: list[dict[str, Any]] = []
    chosen: Literal["gsm8k", "generic"] | None = None if fmt == "auto" else fmt
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise JsonlError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON object "
                                 f"per line") from None
            if not isinstance(rec, dict):
                raise JsonlError(f"{where}: expected a JSON object per line, got {type(rec).__name__}")
            if chosen is None:
                if "question" in rec and "answer" in rec:
                    chosen = "gsm8k"
                elif "prompt" in rec and "answer" in rec:
                    chosen = "generic"
                else:
                    raise JsonlError(f'{where}: cannot tell the format from keys {sorted(rec)}: expected GSM8K\'s '
                                     f'"question" and "answer", or "prompt" and "answer"')
            r = _gsm_record(rec, where) if chosen == "gsm8k" else _generic_record(rec, where)
            rid = str(r["id"]) if r["id"] is not None else f"{path.stem}:{lineno}"
            if rid in seen:
                raise JsonlError(f"{where}: id {rid!r} already used on line {seen[rid]}; ids must be unique")
            seen[rid] = lineno
            r["id"], r["line"] = rid, lineno
            out.append(r)
    if not out or chosen is None:
        raise JsonlError(f"{path}: the file holds no records (one JSON object per line expected)")
    return chosen, out


class JsonlTask(Task):
    """Problems from a JSONL file (GSM8K or generic), graded by their final number.

    Formats: `direct` (the answer alone) and `cot` (the reference chain, then the answer: `Let's think step
    by step.`, the chain and `#### N`; or, when `think` is on, `<think>` + chain + `</think>` and
    `\\boxed{N}`, as R1-style models write). `cot_prefix` is where `cot` starts: `<think>\\n` with `think`,
    else `Let's think step by step.\\n`. `think` and `chat` come from the config or, left None, from the
    model through `for_model` (see `JsonlConfig`)."""

    name = "jsonl"
    formats = ("direct", "cot")
    cot_formats = ("cot",)

    def __init__(self, path: str | Path, format: FileFormat = "auto", chat: bool | None = None,
                 think: bool | None = None) -> None:
        self.path = resolve_path(path)
        self.config = JsonlConfig(str(path), format, chat, think)
        self.file_format, self._records = read_records(self.path, format)
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    @classmethod
    def from_config(cls, config: JsonlConfig) -> JsonlTask:
        return cls(config.path, config.format, config.chat, config.think)

    @property
    def chat(self) -> bool | None:
        return self.config.chat

    @property
    def think(self) -> bool:
        return bool(self.config.think)

    def __len__(self) -> int:
        return len(self._records)

    def for_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> JsonlTask:
        """A copy whose undecided options are decided for this tokenizer: `chat` when it has a chat
        template, `think` when `<think>` is a single token of it. Options set explicitly are kept.

        Some base models ship a chat template (Qwen2.5-Math-1.5B does): set `chat=False` for plain prompts.
        A template that itself ends in `<think>\\n` (recent DeepSeek-R1-Distill ones) makes every free
        completion start inside the block, which the grader and spans read as thinking; forcing a chain
        there (`cot_prefix`) would open a second block, so evaluate such a model with `force="free"`."""
        chat = self.config.chat
        if chat is None:
            chat = bool(getattr(tokenizer, "chat_template", None))
        think = self.config.think
        if think is None:
            think = len(tokenizer(THINK_OPEN, add_special_tokens=False)["input_ids"]) == 1
        new = object.__new__(JsonlTask)
        new.__dict__.update(self.__dict__)
        new.config = dataclasses.replace(self.config, chat=chat, think=think)
        return new

    def for_model(self, model: Model) -> JsonlTask:
        """`for_tokenizer(model.tokenizer)`: pass `GenerationConfig(chat=task.chat)` with the result."""
        return self.for_tokenizer(model.tokenizer)

    def _item(self, r: Mapping[str, Any]) -> Item:
        data = {k: r[k] for k in ("question", "prompt", "chain", "line") if k in r}
        return Item(r["id"], self._render(data), r["answer"], dict(r["meta"]), data)

    def _render(self, data: Mapping[str, Any]) -> str:
        if "question" in data:
            return data["question"] if self.chat else _GSM_PROMPT.format(question=data["question"])
        return str(data["prompt"])

    def sample(self, n: int, seed: int, n_steps: int | None = None, **knobs: Any) -> list[Item]:
        """The first `n` records after a shuffle seeded by `seed` (only those with `n_steps` steps, if given)."""
        if knobs:
            raise ValueError(f"the jsonl task takes no knobs {', '.join(sorted(knobs))}; it accepts n_steps")
        pool = self._records if n_steps is None else [r for r in self._records if r["meta"].get("n_steps") == n_steps]
        what = f"{self.path}" + ("" if n_steps is None else f" with n_steps={n_steps}")
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if n > len(pool):
            raise ValueError(f"asked for {n} items but {what} holds {len(pool)}: ask for at most {len(pool)}")
        order = list(range(len(pool)))
        random.Random(seed).shuffle(order)
        return [self._item(pool[i]) for i in order[:n]]

    def prompt(self, item: Item) -> str:
        return self._render(item.data) if "question" in item.data or "prompt" in item.data else item.prompt

    def _sep(self, item: Item) -> str:
        """What joins prompt and completion: nothing after a chat template or trailing whitespace, else a space."""
        p = self.prompt(item)
        return "" if self.chat or not p or p[-1].isspace() else " "

    def cot_prefix(self, item: Item) -> str:
        return self._sep(item) + (THINK_OPEN + "\n" if self.think else STEP_BY_STEP + "\n")

    def completion(self, item: Item, fmt: str) -> str:
        self.check_formats(fmt)
        if fmt == "direct":
            if self.think:
                return self._sep(item) + f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n\\boxed{{{item.answer}}}"
            return self._sep(item) + item.answer
        chain = item.data.get("chain")
        if not chain:
            raise ValueError(f"item {item.id!r} has no reference chain of thought, so no 'cot' completion: a generic "
                             f'record needs a "chain" field for it')
        if self.think:
            return self.cot_prefix(item) + f"{chain}\n{THINK_CLOSE}\n\n\\boxed{{{item.answer}}}"
        return self.cot_prefix(item) + f"{chain}\n#### {item.answer}"

    def _read(self, completion: str) -> dict[str, Any]:
        """Where the parts of a completion are: thinking, the reasoning steps, the answer's number."""
        text = completion
        if not self.chat and self.file_format == "gsm8k" and _NEXT_QUESTION in text:
            text = text[:text.index(_NEXT_QUESTION)]  # a base model inventing the next problem: stop there
        th = split_thinking(text)
        close_at = None
        if th.thinking is not None:
            value, span = None, None
            if th.closed:
                close_at = text.index(THINK_CLOSE, th.thinking_span[1] if th.thinking_span else 0)
                value, found = final_number(th.answer), number_span(th.answer)
                if found is not None:
                    span = (found[0] + th.answer_span[0], found[1] + th.answer_span[0])
            offset = th.thinking_span[0] if th.thinking_span else 0
            reasoning = [(a + offset, b + offset) for a, b in steps(th.thinking)]
        else:
            value, span = final_number(text), number_span(text)
            start = 0
            lead = text.lstrip()
            if lead.startswith(STEP_BY_STEP):
                start = len(text) - len(lead) + len(STEP_BY_STEP)
            end = len(text)
            all_steps = [(a + start, b + start) for a, b in steps(text[start:])]
            if span is not None:
                end = next((a for a, b in all_steps if b > span[0]), span[0])
            reasoning = [(a, b) for a, b in all_steps if b <= end]
        return {"thinking": th, "value": value, "span": span, "steps": reasoning, "close_at": close_at}

    def grade(self, item: Item, completion: str) -> Grade:
        """Valid when a number can be read as the answer (after `</think>` when the completion thinks); `cot`
        when it thinks (non-empty block) or writes `MIN_COT_STEPS` steps before the answer; `steps_correct`
        counts the reference's steps (`value.step{i}`) whose value appears among the reasoning's numbers."""
        r = self._read(completion)
        th = r["thinking"]
        n_steps = len(r["steps"])
        cot = bool(th.thinking) if th.thinking is not None else n_steps >= MIN_COT_STEPS
        ref = [normalize_number(str(v)) for k, v in item.meta.items() if k.startswith("value.step")]
        written = {v for a, b in r["steps"] for v, _ in numbers(completion, a, b)}
        steps_correct = sum(v in written for v in ref)
        if th.thinking is not None and not th.closed:
            return Grade(False, "invalid", True, None, False, n_steps, steps_correct,
                         reason=f"the thinking block is never closed (no {THINK_CLOSE})")
        if r["value"] is None:
            where = f"after {THINK_CLOSE}" if th.thinking is not None else "in the completion"
            return Grade(False, "invalid", cot, None, False, n_steps, steps_correct, reason=f"no number {where}")
        fmt = "cot" if cot else "direct"
        return Grade(True, fmt, cot, r["value"], r["value"] == item.answer, n_steps, steps_correct)

    def spans(self, item: Item, completion: str | None = None) -> dict[str, Span]:
        """`answer` (the prompt's last character), `question.number{i}` (the prompt's numbers, from 1), and
        for a completion `thinking` (its text), `thinking.close` (the `</think>` tag), `answer.value` (the
        number graded as the answer) and `step{i}.end` (the reasoning's steps, from 1); names absent when
        the completion lacks the part."""
        p = self.prompt(item)
        out: dict[str, Span] = {"answer": (len(p) - 1, len(p))}
        q = item.data.get("question")
        at = p.find(q) if isinstance(q, str) else 0
        region = (at, at + len(q)) if isinstance(q, str) and at >= 0 else (0, len(p))
        for i, (_, s) in enumerate(numbers(p, *region), 1):
            out[f"question.number{i}"] = s
        if completion:
            n = len(p)
            r = self._read(completion)
            th = r["thinking"]
            if th.thinking_span is not None:
                out["thinking"] = (th.thinking_span[0] + n, th.thinking_span[1] + n)
            if r["close_at"] is not None:
                out["thinking.close"] = (r["close_at"] + n, r["close_at"] + len(THINK_CLOSE) + n)
            if r["span"] is not None:
                out["answer.value"] = (r["span"][0] + n, r["span"][1] + n)
            for i, (a, b) in enumerate(r["steps"], 1):
                out[f"step{i}.end"] = (a + n, b + n)
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.to_dict(), "file_format": self.file_format,
                "n_records": len(self._records), "sha256": self.sha256}


__all__ = ["DATA_DIR", "MIN_COT_STEPS", "STEP_BY_STEP", "JsonlConfig", "JsonlError", "JsonlTask", "read_records",
           "resolve_path"]
