"""Load a checkpoint once and see it three ways: Hugging Face, TransformerBridge (TL hook names), nnsight.

`load(name_or_path)` accepts an organism name (`organism/base-s`), a local checkpoint folder, or a
Hugging Face hub id that is already in the local cache; nothing is ever downloaded. The Bridge and
the nnsight wrapper hold the very same parameter tensors as `Model.hf`, so an edit through one is
seen by the others (fused-QKV models such as GPT-NeoX are the exception: see `Model`).
`load_pair(base, tuned)` loads two models and refuses pairs whose activations cannot be compared (architecture, sizes, vocabulary, parameter shapes), naming every difference.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from interp.generate import context_length, generate_ids
from interp.hooks import expand_hook_names, validate_hook_names
from interp.registry import model_names, model_resolver
from interp.tokens import TokenError, check_known_tokens, single_token

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
MAX_LISTED_PARAMETER_DIFFERENCES = 25


class ModelNotFoundError(FileNotFoundError):
    """A name that is neither a checkpoint folder, an organism, nor a cached hub model."""


class IncompatiblePairError(ValueError):
    """Base and tuned models whose activations cannot be compared; `.differences` lists why."""

    def __init__(self, message: str, differences: list[str]):
        super().__init__(message)
        self.differences = differences


# ----------------------------------------------------------------------------------------- paths

def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or not _HUB_ID.match(name)


def _hub_cache_dir() -> str | None:
    """The hub cache as the environment says now (HF_HUB_CACHE, then HF_HOME/hub), else the library default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _check_checkpoint_dir(path: Path, shown: str) -> Path:
    if not path.is_dir():
        raise ModelNotFoundError(f"{shown!r} is not a directory ({path})")
    if not (path / "config.json").is_file():
        present = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise ModelNotFoundError(
            f"{path} is not a Hugging Face checkpoint: it has no config.json (it holds: {present}). "
            f"Point at the folder written by `save_pretrained` (config.json, weights, tokenizer files)"
        )
    return path


def resolve_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Checkpoint folder for an organism name, a local folder or a cached hub id; never downloads."""
    if isinstance(name_or_path, os.PathLike):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise ModelNotFoundError(f"no such directory: {path}")
        return _check_checkpoint_dir(path, str(name_or_path))
    name = str(name_or_path)
    resolver = model_resolver(name)
    if resolver is not None:
        return resolver(name)
    path = Path(name).expanduser()
    if path.exists():
        return _check_checkpoint_dir(path, name)
    if _looks_like_path(name):
        raise ModelNotFoundError(f"no such directory: {path.resolve() if not name.startswith('~') else path}")
    return _resolve_hub_id(name)


def _resolve_hub_id(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    cache = _hub_cache_dir()
    try:
        snapshot = Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))  # type: ignore[arg-type]
    except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...: all mean "not usable here"
        from huggingface_hub import constants

        registered = model_names()
        near = [n for n in registered if n.rsplit("/", 1)[-1] == repo_id]
        zoo_hint = f" (a registered model is spelled {near[0]})" if near else ""
        raise ModelNotFoundError(
            f"{repo_id!r} is neither a local directory, a registered model name ({', '.join(registered)}), "
            f"nor a model in the local Hugging Face cache "
            f"({cache or constants.HF_HUB_CACHE}){zoo_hint}. Nothing is downloaded here: on a machine "
            f"with network run `hf download {repo_id}` into the same cache (or copy the checkpoint folder "
            f"here and pass its path), and set HF_HOME or HF_HUB_CACHE if the cache lives elsewhere. "
            f"[{type(e).__name__}]"
        ) from e
    return _check_checkpoint_dir(snapshot, repo_id)


# ----------------------------------------------------------------------------------------- model

def right_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
              ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """Ids and attention mask of rows padded on the right with `pad_id`."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device), mask.to(device)


def weights_checksum(weights: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over every state_dict tensor (name, dtype, shape, bytes) in name order."""
    items = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    h = hashlib.sha256()
    for name, t in sorted(items.items()):
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()


def _weights_state(weights: Mapping[str, torch.Tensor]) -> tuple[tuple[int, int], ...]:
    """Cheap fingerprint that changes on any in-place write or tensor swap (not on writes via `.data`)."""
    return tuple((t.data_ptr(), t._version) for t in weights.values())


@dataclass(eq=False, repr=False)
class Model:
    """One set of Hugging Face weights seen as `hf`, as a TransformerBridge (`bridge`) and via nnsight (`nn`).

    `hf` is a plain Hugging Face model (nnsight wraps it; generation runs on it with its KV cache). The
    Bridge runs on its own module tree over the same parameter tensors, because booting rewires the
    modules it is given and HF's cached generation through rewired modules gives wrong tokens. So a
    weight edit is seen by all three views, while Bridge hooks fire only in Bridge calls. `weights` holds
    the checkpoint's tensors under their HF names; checksum, n_params and `compare` use it.
    `bridge_params` are parameters the Bridge made that share no storage with the checkpoint: a zero
    unembedding bias, and for fused-QKV models such as GPT-NeoX, *copies* of the q/k/v slices, which
    the Bridge's forward uses instead of the fused checkpoint tensor (`hf` still uses the fused one).
    """

    name: str
    path: Path
    hf: PreTrainedModel
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: PreTrainedTokenizerBase
    weights: dict[str, torch.Tensor] = field(repr=False)
    bridge_params: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _nn: Any = field(default=None, init=False)
    _checksum: tuple[Any, str] | None = field(default=None, init=False)
    _bridge_params_at_load: tuple[tuple[int, int], ...] = field(default=(), init=False)
    # texts already encoded by `interp.tasks.encode_text` (analyses encode the same items for many conditions)
    encodings: OrderedDict[Any, Any] = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._bridge_params_at_load = _weights_state(self.bridge_params)

    @property
    def nn(self) -> Any:
        """nnsight wrapper around `hf` (built on first use; same parameter tensors)."""
        if self._nn is None:
            try:
                from nnsight.modeling.transformers import TransformersModel
            except ImportError:  # nnsight < 0.8
                from nnsight import LanguageModel

                self._nn = LanguageModel(self.hf, tokenizer=self.tokenizer)
            else:
                self._nn = TransformersModel(self.hf, task="text-generation", tokenizer=self.tokenizer)
        return self._nn

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def d_vocab(self) -> int:
        return int(self.bridge.cfg.d_vocab)

    @property
    def n_heads(self) -> int:
        return int(self.bridge.cfg.n_heads)

    @property
    def d_mlp(self) -> int | None:
        d = getattr(self.bridge.cfg, "d_mlp", None)
        return int(d) if d is not None else None

    @property
    def n_ctx(self) -> int:
        return context_length(self.hf)

    @property
    def hook_names(self) -> list[str]:
        """TransformerLens hook names the Bridge exposes, sorted."""
        return sorted(self.bridge.hook_dict.keys())

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def n_params(self) -> int:
        """Parameters of the checkpoint (tied tensors once; not the Bridge's additions)."""
        unique = {id(t): t for t in self.weights.values() if isinstance(t, torch.nn.Parameter)}
        return sum(t.numel() for t in unique.values())

    @property
    def checksum(self) -> str:
        """sha256 of the checkpoint tensors (a plain HF load of the same files gives the same value);
        cached, and recomputed after any in-place write to a weight (writes through `.data` go unseen).
        Once a Bridge-made parameter is written to, it is hashed too, so the checksum changes."""
        extra = _weights_state(self.bridge_params)
        state = (_weights_state(self.weights), extra)
        if self._checksum is None or self._checksum[0] != state:
            items = dict(self.weights)
            if extra != self._bridge_params_at_load:
                items.update({f"bridge:{n}": t for n, t in self.bridge_params.items()})
            self._checksum = (state, weights_checksum(items))
        return self._checksum[1]

    def check_hooks(self, names: str | Sequence[str]) -> None:
        """Raise UnknownHookError (with suggestions) unless every name is a hook of this model."""
        validate_hook_names(names, self.hook_names)

    def hooks(self, names: str | Sequence[str]) -> list[str]:
        """Hook names with `*` patterns expanded (`blocks.*.hook_resid_post`), every one checked."""
        out = expand_hook_names(names, self.hook_names)
        self.check_hooks(out)
        return out

    @property
    def bos_token_id(self) -> int | None:
        """The BOS id the Bridge prepends (None when the tokenizer has none)."""
        tid = self.tokenizer.bos_token_id
        return None if tid is None else int(tid)

    @property
    def prepend_bos(self) -> bool:
        """Whether a prompt starts with BOS by default: the Bridge's rule (`cfg.default_prepend_bos`), so
        `encode`, `to_tokens`, harvest, patching and generation all see the ids `bridge.to_tokens` gives."""
        return bool(getattr(self.bridge.cfg, "default_prepend_bos", True)) and self.bos_token_id is not None

    def check_text(self, text: str) -> None:
        """Raise a TokenError if a word-level tokenizer would turn a word of `text` into its unknown token."""
        check_known_tokens(self.tokenizer, text)

    def to_single_token(self, text: str) -> int:
        """Id of a string that is exactly one token (`" 9"` on byte-level BPE); a TokenError names the pieces."""
        return single_token(self.tokenizer, text)

    def answer_ids(self, prompt: str, answer: str) -> list[int]:
        """Ids of `answer` as they follow `prompt` (tokenized on its own, as generation sees it). An answer with
        no leading space after a prompt that ends in a word is refused when the tokenizer spells the spaced
        form differently (`"9"` vs `" 9"` = `Ġ9` on byte-level BPE): the logit read would not be the one
        the model writes."""
        self.check_text(answer)
        ids = [int(i) for i in self.tokenizer(answer, add_special_tokens=False)["input_ids"]]
        if not ids:
            raise TokenError(f"the answer {answer!r} has no tokens")
        if answer[:1].isspace() or prompt[-1:].isspace() or not prompt:
            return ids
        spaced = [int(i) for i in self.tokenizer(" " + answer, add_special_tokens=False)["input_ids"]]
        if spaced[0] != ids[0]:
            pieces = self.tokenizer.convert_ids_to_tokens(spaced[:1])
            raise TokenError(f"answer {answer!r} has no leading space, but after {prompt[-12:]!r} this tokenizer "
                             f"writes {' ' + answer!r} (first token {pieces[0]!r}): pass {' ' + answer!r}")
        return ids

    def token_ids(self, text: str, prepend_bos: bool | None = None) -> list[int]:
        """Ids of one text: BOS by `prepend_bos` (default: the Bridge's rule), then the text without the
        tokenizer's own special tokens. Unknown words and texts longer than the context are errors."""
        self.check_text(text)
        bos = self.prepend_bos if prepend_bos is None else prepend_bos
        if bos and self.bos_token_id is None:
            raise ValueError(f"{self.name}'s tokenizer has no BOS token: pass prepend_bos=False")
        ids = ([self.bos_token_id] if bos else []) + list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) > self.n_ctx:
            raise ValueError(f"text has {len(ids)} tokens, more than the model's context length of {self.n_ctx} "
                             f"tokens: shorten it to at most {self.n_ctx} tokens ({text[:60]!r}...)")
        return [int(i) for i in ids]  # type: ignore[misc]

    def encode(
        self, text: str | Sequence[str], prepend_bos: bool | None = None
    ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
        """Token ids and attention mask `[batch, pos]`, padded on the RIGHT (the one padding convention of
        every forward pass here: row i's positions are 0..len_i-1 whatever the batch), BOS by the Bridge's
        rule unless `prepend_bos` says otherwise. Generation left-pads internally and returns unpadded ids."""
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise ValueError("no text to tokenize")
        rows = []
        for i, t in enumerate(texts):
            try:
                rows.append(self.token_ids(t, prepend_bos))
            except ValueError as e:
                raise type(e)(f"text {i}: {e}") from None
        return right_pad(rows, self.pad_token_id, self.device)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool | None = None) -> Int[torch.Tensor, "batch pos"]:
        """Token ids `[batch, pos]`, right-padded (see `encode` for the mask); equal to `bridge.to_tokens`."""
        return self.encode(text, prepend_bos)[0]

    def generate(self, prompts: str | Sequence[str], max_new_tokens: int = 64, temperature: float = 0.0,
                 seed: int = 0, batch_size: int = 256, prepend_bos: bool | None = None) -> list[str]:
        """Completions (text after each prompt, up to EOS) of `hf` by `interp.generate.generate_ids` (the tokens HF
        generate gives), greedy by default, seeded otherwise; prompts get BOS by the Bridge's rule; steering and
        other forward hooks stay active."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = []
        for i, p in enumerate(prompts):
            row = self.token_ids(p, prepend_bos)
            if len(row) >= self.n_ctx:
                raise ValueError(f"prompt {i} has {len(row)} tokens, but the model's context is {self.n_ctx} tokens "
                                 f"and generation needs at least one free position: shorten it to < {self.n_ctx}")
            ids.append(row)
        outs = generate_ids(self.hf, self.tokenizer, ids, max_new_tokens, temperature, seed, batch_size)
        return [self.tokenizer.decode(o, skip_special_tokens=False) for o in outs]

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, {type(self.hf).__name__}, n_layers={self.n_layers}, "
                f"d_model={self.d_model}, n_params={self.n_params:,}, device={self.device})")


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer. One saved as a plain `tokenizers` file (`tokenizer_class` TokenizersBackend or
    PreTrainedTokenizerFast, as the organisms are) is loaded as exactly that: transformers 5's AutoTokenizer
    would pick the architecture's class (Qwen2Tokenizer for a Qwen2 config), same ids but wrong character
    offsets, and named positions are mapped through the offsets."""
    cfg_file = path / "tokenizer_config.json"
    cls = json.loads(cfg_file.read_text()).get("tokenizer_class") if cfg_file.is_file() else None
    if cls in ("TokenizersBackend", "PreTrainedTokenizerFast") and (path / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from itself or its name (`"bfloat16"`, `"float16"`, `"float32"`)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load(
    name_or_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    device_map: str | dict[str, Any] | None = None,
) -> Model:
    """Load a checkpoint (organism name, local folder, or cached hub id) in eval mode, with its Bridge.

    `dtype` takes a name (`"bfloat16"` for large models on a GPU); `device_map` (e.g. `"auto"`, through
    accelerate) spreads a model too large for one device over several, and then `device` is ignored.
    `trust_remote_code` stays off unless you ask: it runs code from the checkpoint folder."""
    from transformer_lens.model_bridge import TransformerBridge

    dtype = as_dtype(dtype)
    path = resolve_path(name_or_path)
    hf = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code, local_files_only=True,
        **({"device_map": device_map} if device_map is not None else {}),
    )
    if device_map is None:
        hf = hf.to(device)
    else:
        device = next(hf.parameters()).device  # the Bridge's own tensors go where the embeddings are
    hf = hf.eval()
    tok = load_tokenizer(path, trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    weights = dict(hf.state_dict(keep_vars=True))
    # The Bridge rewires the module it is given in place, and HF's cached generation through the rewired
    # modules gives wrong tokens (measured on the organism). So it gets its own module tree over the very
    # same parameter and buffer tensors, and `hf` stays a plain Hugging Face model.
    shared = {id(t): t for t in [*hf.parameters(), *hf.buffers()]}
    shadow = copy.deepcopy(hf, memo=shared)
    bridge = TransformerBridge.boot_transformers(
        str(path), hf_model=shadow, tokenizer=tok, device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )
    bridge.eval()
    storages = {t.untyped_storage().data_ptr() for t in weights.values()}
    made = {n: p for n, p in shadow.named_parameters() if p.untyped_storage().data_ptr() not in storages}
    return Model(name=str(name_or_path), path=path, hf=hf, bridge=bridge, tokenizer=tok, weights=weights,
                 bridge_params=made)


# ------------------------------------------------------------------------------------------ pair

@dataclass(frozen=True)
class ModelPair:
    """A base model and its post-trained variant; `differences` is empty unless loaded with `check=False`."""

    base: Model
    tuned: Model
    differences: tuple[str, ...] = ()


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _vocab_differences(base: dict[str, int], tuned: dict[str, int], max_examples: int = 5) -> str | None:
    differ = sorted((t for t in base.keys() | tuned.keys() if base.get(t) != tuned.get(t)),
                    key=lambda t: (min(base.get(t, 1 << 62), tuned.get(t, 1 << 62)), t not in base, t))
    if not differ:
        return None

    def where(t: str, vocab: dict[str, int], side: str) -> str:
        return f"id {vocab[t]} in {side}" if t in vocab else f"absent in {side}"

    examples = ", ".join(f"{t!r} ({where(t, base, 'base')}, {where(t, tuned, 'tuned')})" for t in differ[:max_examples])
    return f"vocabulary: {len(differ)} token{'s' if len(differ) != 1 else ''} differ, e.g. {examples}"


def compare(base: Model, tuned: Model) -> list[str]:
    """Every difference that makes activations of `base` and `tuned` incomparable, one line each."""
    out: list[str] = []

    def field_(label: str, a: Any, b: Any) -> None:
        if a != b:
            out.append(f"{label}: base {a}, tuned {b}")

    field_("architecture", type(base.hf).__name__, type(tuned.hf).__name__)
    field_("model_type", getattr(base.hf.config, "model_type", None), getattr(tuned.hf.config, "model_type", None))
    for attr in ("n_layers", "d_model", "n_heads", "d_mlp", "d_vocab"):
        a, b = getattr(base.bridge.cfg, attr, None), getattr(tuned.bridge.cfg, attr, None)
        if a is not None and b is not None:
            field_(attr, a, b)
    vocab = _vocab_differences(base.tokenizer.get_vocab(), tuned.tokenizer.get_vocab())
    if vocab:
        out.append(vocab)
    bp = {n: tuple(p.shape) for n, p in base.weights.items()}
    tp = {n: tuple(p.shape) for n, p in tuned.weights.items()}
    for n in list(bp) + [n for n in tp if n not in bp]:
        if n not in tp:
            out.append(f"parameter {n}: base {_shape(bp[n])}, absent in tuned")
        elif n not in bp:
            out.append(f"parameter {n}: absent in base, tuned {_shape(tp[n])}")
        elif bp[n] != tp[n]:
            out.append(f"parameter {n}: base {_shape(bp[n])}, tuned {_shape(tp[n])}")
    return out


def _pair_message(base: Model, tuned: Model, differences: list[str]) -> str:
    params = [d for d in differences if d.startswith("parameter ")]
    shown = [d for d in differences if not d.startswith("parameter ")] + params[:MAX_LISTED_PARAMETER_DIFFERENCES]
    more = len(params) - MAX_LISTED_PARAMETER_DIFFERENCES
    lines = "\n".join(f"  - {d}" for d in shown)
    if more > 0:
        lines += f"\n  - ... and {more} more parameter differences (all in the error's .differences)"
    return (f"base {base.name!r} and tuned {tuned.name!r} cannot be compared as a pair "
            f"({len(differences)} difference{'s' if len(differences) != 1 else ''}):\n{lines}")


def load_pair(base: str | os.PathLike[str] | Model, tuned: str | os.PathLike[str] | Model,
              check: bool = True, **kw: Any) -> ModelPair:
    """Load base and tuned (`**kw` go to `load`); raise IncompatiblePairError naming every difference."""
    b = base if isinstance(base, Model) else load(base, **kw)
    t = tuned if isinstance(tuned, Model) else load(tuned, **kw)
    differences = compare(b, t)
    if differences and check:
        raise IncompatiblePairError(_pair_message(b, t, differences), differences)
    return ModelPair(b, t, tuple(differences))


__all__ = [
    "IncompatiblePairError",
    "Model",
    "ModelNotFoundError",
    "ModelPair",
    "compare",
    "load",
    "load_pair",
    "resolve_path",
    "weights_checksum",
]
