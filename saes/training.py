"""Train SAEs with sae-lens' SAETrainer on a harvested activation store: seeded, resumable, saved for sae-lens.

sae-lens' runners cannot read a TransformerBridge, so rows come from our store (`interp.activations`):
each epoch streams the store's shards with rows permuted by (seed, epoch), through sae-lens' own
`mixing_buffer`, whose shuffle draws from an RNG state kept apart from torch's global one. The stream is
therefore a pure function of (store, config), and a checkpoint (safetensors tensors + JSON state: SAE,
Adam moments, schedulers, firing counters, batches served) lets a killed run resume to the very same
weights. The result is written with `save_inference_model` (so `sae_lens.SAE.load_from_disk` loads it)
plus `card.json`: hook, model checksum, store and dataset hash, config, metrics, library versions.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float

from interp.activations import ActivationStore, StoreError
from interp.io import (
    atomic_dir,
    library_versions,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from saes.config import SAEError, SAETrainConfig, training_sae_config

if TYPE_CHECKING:
    from interp.models import Model

CARD = "card.json"
CARD_VERSION = 1
CHECKPOINT = "checkpoint"


# ------------------------------------------------------------------------------------------ data

_NO_BOS = object()  # shards' default: look the BOS id up for the store


def _tokenizer_bos(model_name: str) -> int | None:
    """The BOS id of a model's tokenizer, read from its checkpoint folder (never downloads)."""
    from transformers import AutoTokenizer

    from interp.models import resolve_path

    tok = AutoTokenizer.from_pretrained(resolve_path(model_name), local_files_only=True)
    return None if tok.bos_token_id is None else int(tok.bos_token_id)


_BOS_CACHE: dict[tuple[str, str], int | None] = {}


def bos_token_id(store: ActivationStore, model: Model = None) -> int | None:
    """The token id whose rows `exclude_bos` leaves out: the manifest's `bos_token_id` if the harvest recorded
    one, else the tokenizer's of `model` (or of the store's model, found by name). None: the tokenizer has no
    BOS token, so nothing is left out. Rows are matched by token id, not by position: GPT-2/Qwen-style
    tokenizers put a text token at position 0."""
    if "bos_token_id" in store.manifest:
        v = store.manifest["bos_token_id"]
        return None if v is None else int(v)
    if model is not None:
        if model.checksum != store.model_checksum:
            raise SAEError(f"{store.root} was harvested from {store.model_name!r}, not {model.name!r}: its BOS token "
                           f"is not necessarily {model.name!r}'s")
        v = model.tokenizer.bos_token_id
        return None if v is None else int(v)
    key = (store.model_name, store.model_checksum)
    if key not in _BOS_CACHE:
        try:
            _BOS_CACHE[key] = _tokenizer_bos(store.model_name)
        except Exception as e:
            raise SAEError(f"cannot tell which token is BOS in {store.root}: the tokenizer of {store.model_name!r} "
                           f"cannot be read here ({type(e).__name__}: {str(e)[:160]}); pass the model (model=...) "
                           f"or exclude_bos=False") from e
    return _BOS_CACHE[key]


def _rows(store: ActivationStore, hook: str, label: str | None, exclude_bos: bool = False, bos_id: Any = _NO_BOS
          ) -> int:
    return sum(len(idx["example"]) for _, idx in shards(store, hook, label, exclude_bos, bos_id))


def shards(store: ActivationStore, hook: str, label: str | None, exclude_bos: bool = False,
           bos_id: Any = _NO_BOS) -> Iterator[tuple[torch.Tensor, dict]]:
    """The store's rows shard by shard (as `iter_batches`); with `exclude_bos`, without the rows whose token is
    the BOS token (`bos_id`, looked up with `bos_token_id(store)` unless given; None leaves out nothing)."""
    bos = (bos_token_id(store) if bos_id is _NO_BOS else bos_id) if exclude_bos else None
    for acts, idx in store.iter_batches(hook, label):
        if bos is not None:
            keep = idx["token"] != bos
            acts, idx = acts[torch.from_numpy(keep)], {k: v[keep] for k, v in idx.items()}
        yield acts, idx


def epoch_chunks(epoch_rows: Callable[[int], Iterable[torch.Tensor]], seed: int, chunk_rows: int
                 ) -> Iterator[Float[torch.Tensor, "rows d_in"]]:
    """Endless chunks of rows: epoch e walks the row groups `epoch_rows(e)` gives (a store's shards), each permuted
    by (seed, epoch). Any source of the same groups gives the same chunks (stored and streamed runs agree)."""
    epoch = 0
    while True:
        rng = np.random.default_rng([seed, epoch])
        seen = False
        for acts in epoch_rows(epoch):
            if len(acts) == 0:
                continue
            seen = True
            acts = acts.float()[torch.from_numpy(rng.permutation(len(acts)))]
            for i in range(0, len(acts), chunk_rows):
                yield acts[i:i + chunk_rows]
        if not seen:
            raise SAEError("an epoch of the activations held no rows: nothing to train on")
        epoch += 1


def store_rows(store: ActivationStore, hook: str, label: str | None, seed: int, chunk_rows: int,
               exclude_bos: bool = False, bos_id: Any = _NO_BOS) -> Iterator[Float[torch.Tensor, "rows d_in"]]:
    """Endless chunks of the store's rows: every epoch visits each row once, permuted by (seed, epoch)."""
    return epoch_chunks(lambda epoch: (a for a, _ in shards(store, hook, label, exclude_bos, bos_id)), seed, chunk_rows)


class DataProvider:
    """sae-lens' mixing buffer over `store_rows` (or any endless iterator of row chunks), with its own torch RNG
    state (the global one is untouched), counting the batches it served so that a resumed run can skip exactly
    those."""

    def __init__(self, store: ActivationStore | Iterator[torch.Tensor], cfg: SAETrainConfig, bos_id: Any = _NO_BOS
                 ) -> None:
        from sae_lens.training.mixing_buffer import mixing_buffer

        self.served = 0
        self._rng = torch.Generator().manual_seed(cfg.seed).get_state()
        rows = store_rows(store, cfg.hook, cfg.label, cfg.seed, cfg.chunk_rows, cfg.exclude_bos, bos_id) \
            if isinstance(store, ActivationStore) else store
        self._it = mixing_buffer(cfg.buffer_size, cfg.batch_size, rows, cfg.mix_fraction)

    def __iter__(self) -> DataProvider:
        return self

    def __next__(self) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng)
            batch = next(self._it)
            self._rng = torch.get_rng_state()
        self.served += 1
        return batch

    def skip(self, n: int) -> None:
        for _ in range(n):
            next(self)

    def close(self) -> None:
        self._it.close()


# ------------------------------------------------------------------------------------------ checks

def check_store(store: ActivationStore, cfg: SAETrainConfig, bos_id: Any = _NO_BOS) -> int:
    """The hook's width; clear errors for a missing hook, a non-vector hook and an empty store or label."""
    if cfg.hook not in store.hooks:
        raise SAEError(f"hook {cfg.hook!r} is not in the store {store.root}; it holds {store.hooks}")
    shape = store.shape(cfg.hook)
    if len(shape) != 1:
        raise SAEError(f"{cfg.hook} rows have shape {shape}; an SAE reads one vector per row (harvest "
                       f"hook_resid_*, hook_attn_out or hook_mlp_out, or flatten hook_z first)")
    if cfg.label is not None:
        store.label_ids(cfg.label)
    n = _rows(store, cfg.hook, cfg.label, cfg.exclude_bos, bos_id)
    if n == 0:
        what = f"rows with position label {cfg.label!r}" if cfg.label else "rows"
        raise SAEError(f"the activation store {store.root} holds no {what} of {cfg.hook}: nothing to train on")
    return int(shape[0])


# ------------------------------------------------------------------------------------------ checkpoint

def _trainer_cfg(cfg: SAETrainConfig, device: str = "cpu") -> Any:
    from sae_lens import LoggingConfig
    from sae_lens.config import SAETrainerConfig

    return SAETrainerConfig(
        total_training_samples=cfg.total_samples, train_batch_size_samples=cfg.batch_size, lr=cfg.lr,
        lr_end=cfg.lr * cfg.lr_end_fraction, lr_scheduler_name=cfg.lr_scheduler, lr_warm_up_steps=cfg.lr_warm_up_steps,
        device=device, dead_feature_window=cfg.dead_feature_window, feature_sampling_window=10 ** 9,
        n_checkpoints=cfg.n_checkpoints, checkpoint_path=None, save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
    )


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.item()
    return x


def _store_state(store: ActivationStore) -> dict[str, Any]:
    """What the rows a run reads depend on: the store's model, dataset and shard checksums."""
    shards_ = store.manifest.get("shards", {})
    return {"model_checksum": store.model_checksum, "dataset_hash": store.manifest.get("dataset_hash"),
            "shards_sha256": {k: shards_[k].get("sha256") for k in sorted(shards_, key=int)}}


def _identity(source: ActivationStore | dict[str, Any] | None) -> dict[str, Any] | None:
    """What the rows of a run depend on: a store's `_store_state`, or a streamed run's own description."""
    return _store_state(source) if isinstance(source, ActivationStore) else source


def save_checkpoint(trainer: Any, provider: DataProvider, cfg: SAETrainConfig, folder: Path,
                    store: ActivationStore | dict[str, Any] | None = None) -> None:
    """SAE weights, Adam moments and firing counters (safetensors) plus counters, schedules, the config and the
    identity of the rows (a store's, or a streamed run's dict) as JSON, written atomically (a crash mid-write
    leaves the previous checkpoint or none)."""
    tensors = {f"sae.{k}": v.cpu() for k, v in trainer.sae.state_dict().items()}
    opt = trainer.optimizer.state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = v.cpu() if isinstance(v, torch.Tensor) else torch.tensor(v)
    tensors["trainer.act_freq_scores"] = trainer.act_freq_scores.cpu()
    tensors["trainer.n_forward_passes_since_fired"] = trainer.n_forward_passes_since_fired.cpu()
    tensors["provider.rng"] = provider._rng
    state = {
        "config": cfg.to_dict(), "store": _identity(store),
        "batches_served": provider.served,
        "n_training_samples": trainer.n_training_samples, "n_training_steps": trainer.n_training_steps,
        "n_frac_active_samples": trainer.n_frac_active_samples, "started_fine_tuning": trainer.started_fine_tuning,
        "param_groups": _jsonable(opt["param_groups"]), "lr_scheduler": _jsonable(trainer.lr_scheduler.state_dict()),
        "coefficient_schedulers": {n: s.state_dict() for n, s in trainer.coefficient_schedulers.items()},
        "scaling_factor": trainer.activation_scaler.scaling_factor,
    }
    with atomic_dir(folder) as tmp:
        save_tensors(tmp / "state.safetensors", tensors)
        write_json(tmp / "state.json", state)


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`field: old -> new` for every config field that differs (fields only one side has included)."""
    return [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in sorted(set(old) | set(new))
            if old.get(k, "(absent)") != new.get(k, "(absent)")]


def load_checkpoint(trainer: Any, provider: DataProvider, cfg: SAETrainConfig, folder: Path,
                    store: ActivationStore | dict[str, Any] | None = None) -> None:
    """Restore everything `save_checkpoint` wrote, and move the data stream to where it was. A checkpoint of
    another configuration or of another store's contents is refused, naming what differs."""
    state = read_json(folder / "state.json")
    diff = config_differences(state["config"], cfg.to_dict())
    if store is not None and state.get("store") is not None:
        old, new = state["store"], _identity(store)
        assert new is not None
        diff += [f"store {k}: {str(old.get(k))[:16]} -> {str(new.get(k))[:16]}" if k != "shards_sha256" else
                 "store shards: other contents" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff:
        raise SAEError(f"the checkpoint in {folder} was written by a run with another configuration or store "
                       f"({'; '.join(diff)}): rerun with that configuration and store to resume it, or delete the folder (resume=False, "
                       f"`--no-resume`) to start over")
    t = load_tensors(folder / "state.safetensors")
    trainer.sae.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("sae.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    trainer.optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
    for n, s in state["coefficient_schedulers"].items():
        trainer.coefficient_schedulers[n].load_state_dict(s)
    dev = trainer.act_freq_scores.device  # the device the run trains on (the checkpoint is on the CPU)
    trainer.act_freq_scores = t["trainer.act_freq_scores"].to(dev)
    trainer.n_forward_passes_since_fired = t["trainer.n_forward_passes_since_fired"].to(dev)
    trainer.n_training_samples = state["n_training_samples"]
    trainer.n_training_steps = state["n_training_steps"]
    trainer.n_frac_active_samples = state["n_frac_active_samples"]
    trainer.started_fine_tuning = state["started_fine_tuning"]
    trainer.activation_scaler.scaling_factor = state["scaling_factor"]
    trainer.checkpoint_thresholds = [x for x in trainer.checkpoint_thresholds if x >= trainer.n_training_samples]
    provider.skip(state["batches_served"])
    provider._rng = t["provider.rng"]


# ------------------------------------------------------------------------------------------ training

@dataclass(frozen=True)
class TrainedSAE:
    """Where a trained SAE lives and its card."""

    path: Path
    card: dict[str, Any]

    def load(self) -> Any:
        from sae_lens import SAE

        return SAE.load_from_disk(self.path)


@dataclass
class Fitted:
    """A finished run before its card: the trainer, how long `fit` took and from how many samples it resumed."""

    trainer: Any
    seconds: float
    resumed_from: int


def fit(provider: DataProvider, cfg: SAETrainConfig, d_in: int, meta: dict[str, Any], out: Path, resume: bool,
        identity: ActivationStore | dict[str, Any], on_checkpoint: Callable[[int], None] | None = None,
        device: str = "cpu") -> Fitted:
    """Run sae-lens' SAETrainer on `provider`'s batches on `device`, checkpointing to `<out>.checkpoint` (and
    resuming from it, on any device); the SAE is initialised on the CPU from `cfg.seed` alone, so the same rows
    and config give the same initial weights wherever it trains."""
    from sae_lens import TrainingSAE
    from sae_lens.training.sae_trainer import SAETrainer

    ckpt = out.with_name(out.name + "." + CHECKPOINT)
    if not resume and ckpt.exists():
        shutil.rmtree(ckpt)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        sae = TrainingSAE.from_dict(training_sae_config(cfg, d_in, meta).to_dict())
    holder: dict[str, Any] = {}

    def on_save(checkpoint_path: Any = None) -> None:
        save_checkpoint(holder["trainer"], provider, cfg, ckpt, identity)
        if on_checkpoint is not None:
            on_checkpoint(holder["trainer"].n_training_samples)

    trainer = SAETrainer(_trainer_cfg(cfg, str(device)), sae, provider, save_checkpoint_fn=on_save)
    holder["trainer"] = trainer
    resumed_from = 0
    if ckpt.is_dir() and (ckpt / "state.json").is_file():
        load_checkpoint(trainer, provider, cfg, ckpt, identity)
        resumed_from = trainer.n_training_samples
    t0 = time.perf_counter()
    try:
        trainer.fit()
    finally:
        provider.close()
    return Fitted(trainer, time.perf_counter() - t0, resumed_from)


def base_card(fitted: Fitted, cfg: SAETrainConfig, d_in: int, model_name: str, model_checksum: str) -> dict[str, Any]:
    """The card fields every run has (the caller adds where its rows came from)."""
    trainer = fitted.trainer
    return {
        "format_version": CARD_VERSION, "hook": cfg.hook, "label": cfg.label, "model_name": model_name,
        "model_checksum": model_checksum, "d_in": d_in, "d_sae": cfg.width(d_in), "architecture": cfg.architecture,
        "config": cfg.to_dict(),
        "training": {"samples": trainer.n_training_samples, "steps": trainer.n_training_steps,
                     "device": str(trainer.cfg.device),
                     "resumed_from_samples": fitted.resumed_from, "seconds": round(fitted.seconds, 3),
                     "activations_per_s": round((trainer.n_training_samples - fitted.resumed_from)
                                                / max(fitted.seconds, 1e-9), 1),
                     "final_l0_trainer": trainer.sae.cfg.metadata.l0,
                     "dead_features_trainer": trainer.sae.cfg.metadata.num_dead_features},
        "metrics": {}, "libraries": library_versions(),
    }


def save_trained(fitted: Fitted, card: dict[str, Any], out: Path) -> Any:
    """Write the SAE (sae-lens' inference format) and its card atomically, drop the checkpoint, and return the SAE
    as sae-lens loads it from disk."""
    from sae_lens import SAE

    with atomic_dir(out) as tmp:
        fitted.trainer.sae.save_inference_model(tmp)
        write_json(tmp / CARD, card)
    shutil.rmtree(out.with_name(out.name + "." + CHECKPOINT), ignore_errors=True)
    return SAE.load_from_disk(out)  # the saved files load in sae-lens


def train_sae(store: ActivationStore | str | Path, cfg: SAETrainConfig, out: str | Path, resume: bool = True,
              on_checkpoint: Callable[[int], None] | None = None, model: Model = None, metrics: bool = True,
              device: str = "cpu") -> TrainedSAE:
    """Train on the store's rows of `cfg.hook` on `device` ("cuda" on a GPU machine); resume from
    `<out>.checkpoint` if a killed run left one. The card gets the quality metrics (`saes.metrics.quality` on the
    store; CE recovered too when `model` is given)."""
    store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    same_model = model if model is not None and model.checksum == store.model_checksum else None
    bos = bos_token_id(store, same_model) if cfg.exclude_bos else None
    d_in = check_store(store, cfg, bos)
    out = Path(out)
    meta = {"hook_name": cfg.hook, "model_name": store.model_name}
    fitted = fit(DataProvider(store, cfg, bos), cfg, d_in, meta, out, resume, store, on_checkpoint, device)
    card = base_card(fitted, cfg, d_in, store.model_name, store.model_checksum) | {
        "source": "store", "store": str(store.root), "store_dataset_hash": store.manifest.get("dataset_hash"),
        "store_rows": _rows(store, cfg.hook, cfg.label, cfg.exclude_bos, bos), "excluded_token_id": bos}
    saved = save_trained(fitted, card, out)
    if metrics:
        from saes.metrics import quality

        q, _ = quality(saved, store, cfg.hook, cfg.label, model=model, exclude_bos=cfg.exclude_bos)
        card = update_card(out, metrics=q.to_dict())
    return TrainedSAE(out, card)


# ------------------------------------------------------------------------------------------ loading

def read_card(path: str | Path) -> dict[str, Any]:
    p = Path(path) / CARD
    if not p.is_file():
        return {}
    return read_json(p)


def load_sae(path_or_release: str | Path, sae_id: str | None = None, *, model: Model = None, hook: str | None = None,
             allow_other_model: bool = False) -> tuple[Any, dict[str, Any]]:
    """An SAE and its card: from a local folder, or from sae-lens' pretrained list (release, id) in the local
    Hugging Face cache only. With `model`/`hook`, refuse one whose width or source model does not fit."""
    from sae_lens import SAE

    if sae_id is None:
        path = Path(path_or_release)
        if not (path / "cfg.json").is_file():
            raise SAEError(f"{path} is not a saved SAE (no cfg.json); train one with `interp sae train` or give a "
                           f"sae-lens release and id")
        sae, card = SAE.load_from_disk(path), read_card(path)
    else:
        sae, card = _from_pretrained_offline(str(path_or_release), sae_id), {}
    check_fits(sae, card, model, hook, allow_other_model)
    return sae, card


def _from_pretrained_offline(release: str, sae_id: str) -> Any:
    import os

    from sae_lens import SAE

    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE",)}
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hc

        prev, hc.HF_HUB_OFFLINE = hc.HF_HUB_OFFLINE, True
        try:
            return SAE.from_pretrained(release, sae_id)
        finally:
            hc.HF_HUB_OFFLINE = prev
    except SAEError:
        raise
    except Exception as e:
        raise SAEError(f"sae-lens SAE {release!r} / {sae_id!r} is not in the local Hugging Face cache and nothing is "
                       f"downloaded here: on a machine with network load it once (SAE.from_pretrained) into the same "
                       f"cache, or save it to a folder (save_model) and pass the folder. [{type(e).__name__}: "
                       f"{str(e)[:200]}]") from e
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_fits(sae: Any, card: dict[str, Any], model: Model = None, hook: str | None = None,
               allow_other_model: bool = False) -> None:
    """Width against the hook's d_model, and the card's model checksum against the model's."""
    if model is None:
        return
    d_in = int(sae.cfg.d_in)
    want = int(model.d_model)
    if d_in != want:
        raise SAEError(f"the SAE reads vectors of width {d_in} but {hook or 'the hook'} of {model.name} has "
                       f"d_model {want}: it was trained on another model or hook")
    if hook is not None and card.get("hook") and card["hook"] != hook and not allow_other_model:
        raise SAEError(f"the SAE was trained on {card['hook']}, not {hook}")
    cs = card.get("model_checksum")
    if cs and cs != model.checksum and not allow_other_model:
        raise SAEError(f"the SAE was trained on {card.get('model_name') or 'another model'} (checksum {cs[:12]}), "
                       f"not {model.name} ({model.checksum[:12]}); pass allow_other_model=True to transfer it on "
                       f"purpose")


def update_card(path: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge fields into an SAE's card (atomically)."""
    card = read_card(path)
    for k, v in fields.items():
        if isinstance(v, dict) and isinstance(card.get(k), dict):
            card[k] = {**card[k], **v}
        else:
            card[k] = v
    write_json(Path(path) / CARD, json.loads(json.dumps(card)))
    return card


__all__ = [
    "CARD",
    "DataProvider",
    "Fitted",
    "StoreError",
    "TrainedSAE",
    "base_card",
    "bos_token_id",
    "check_fits",
    "check_store",
    "epoch_chunks",
    "fit",
    "load_checkpoint",
    "load_sae",
    "read_card",
    "save_checkpoint",
    "save_trained",
    "store_rows",
    "train_sae",
    "update_card",
]
