"""Atomic artefact writing and provenance: nothing half-written, every artefact says where it came from."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_UMASK = os.umask(0)
os.umask(_UMASK)

TRACKED_LIBRARIES = ("torch", "transformers", "transformer-lens", "sae-lens", "nnsight", "numpy", "tokenizers")


def cache_dir(*parts: str) -> Path:
    """The toolkit's cache (results reused across runs): $INTERP_CACHE or ~/.cache/interp."""
    root = Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp"))
    return root.joinpath(*parts)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write JSON atomically (temp file in the same folder, then rename); `indent=None` writes it compact
    (and fast: Python's C encoder only runs without indentation)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; artefacts get the usual mode
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=indent, sort_keys=False, separators=None if indent else (",", ":")))
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata_: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata_)
    os.replace(tmp, path)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path` whole, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_training_state(folder: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                        meta: dict[str, Any]) -> None:
    """A resumable training checkpoint in `<folder>/state`, written atomically: the model's and the optimizer's
    tensors (safetensors) and `meta` (step, config, log, ...) with the optimizer's param groups (JSON)."""
    sd = opt.state_dict()
    flat = {f"{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    with atomic_dir(Path(folder) / "state") as tmp:
        save_tensors(tmp / "model.safetensors", {k: v.contiguous() for k, v in model.state_dict().items()})
        save_tensors(tmp / "optimizer.safetensors", flat)
        write_json(tmp / "state.json", {**meta, "param_groups": sd["param_groups"]})


def read_training_state(folder: str | Path) -> dict[str, Any] | None:
    """The meta of `<folder>/state` (None if no checkpoint), after removing a write a kill cut short."""
    folder = Path(folder)
    for stale in folder.glob(".state.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    path = folder / "state" / "state.json"
    return read_json(path) if path.is_file() else None


def restore_training_state(folder: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                           meta: dict[str, Any]) -> None:
    """Load the checkpoint's model and optimizer tensors (the caller has checked `meta`'s config)."""
    state_dir = Path(folder) / "state"
    model.load_state_dict(load_tensors(state_dir / "model.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in load_tensors(state_dir / "optimizer.safetensors").items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in TRACKED_LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


__all__ = ["atomic_dir", "cache_dir", "library_versions", "load_tensors", "read_json", "save_tensors", "sha256_file", "write_json"]
