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
