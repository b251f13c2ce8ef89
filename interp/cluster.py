"""Run independent pieces of work as Ray tasks (one machine or a cluster), or in this process.

`run_tasks(fn, args_list, ray=...)` is the one place the toolkit talks to Ray: harvest shards, evaluation
groups, patching pairs, probe cells, SAE hooks and report sections are each a list of calls of one function
whose results the existing single-process code merges, so a Ray run gives the same bytes as a sequential
one. Ray is optional (`pip install 'reasoning-interp[ray]'`) and imported only when `ray` is given.

`ray`: None/False runs in this process, in order; True or "local" uses the running Ray instance or starts
one with every CPU of this machine; "auto" joins the cluster `ray start --head` started on this machine's
network; "host:port" (or "ray://host:10001") joins that cluster. Workers that die (killed, out of memory,
node lost) are retried by Ray; an exception raised by `fn` is not retried and reaches the caller as itself,
with the remote traceback in its message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

RaySpec = str | bool | None


def ray_enabled(ray: RaySpec) -> bool:
    """Whether `ray` asks for Ray at all (None, False and "" run in process)."""
    return ray not in (None, False, "")


def parse_ray_option(text: str | None) -> RaySpec:
    """The CLI's `--ray [ADDRESS]` as `run_tasks`' `ray`: absent -> None, bare `--ray` -> "local", else the address."""
    if text is None:
        return None
    text = text.strip()
    if text in ("", "local", "true", "1"):
        return "local"
    return text


def start_local(ray_mod: Any, num_cpus: int | None = None, attempts: int = 3, worker_niceness: int = 0,
                **kw: Any) -> None:
    """`ray.init(num_cpus=...)` of a local instance, tried again when its raylet misses Ray's fixed 30 s startup
    window (it does on an overloaded machine). Its workers run at this process's priority plus `worker_niceness`:
    Ray's default of +15 makes them yield to every other process on the machine, while here they do the work
    this process would otherwise do itself."""
    kw.setdefault("include_dashboard", False)
    kw.setdefault("_system_config", {}).setdefault("worker_niceness", worker_niceness)
    for attempt in range(attempts):
        try:
            ray_mod.init(num_cpus=num_cpus, **kw)
            return
        except Exception as e:  # Ray raises a bare Exception for the startup timeout
            if "timed out during startup" not in str(e) or attempt == attempts - 1:
                raise
            ray_mod.shutdown()


def _connect(ray: RaySpec) -> Any:
    """The `ray` module, initialised as `ray` asks (an instance already running in this process is reused)."""
    try:
        import ray as ray_mod
    except ImportError:
        raise ImportError("--ray needs the ray package: pip install 'reasoning-interp[ray]' (or pip install ray)") from None
    if ray_mod.is_initialized():
        return ray_mod
    if ray is True or ray == "local":
        start_local(ray_mod, num_cpus=os.cpu_count())
    else:
        ray_mod.init(address=str(ray), include_dashboard=False)
    return ray_mod


def _pin_threads(num_cpus: float) -> None:
    """One torch (and BLAS) thread per CPU the task declared, so tasks sharing a node do not oversubscribe it."""
    n = max(1, int(num_cpus))
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import torch
    except ImportError:  # pragma: no cover  (torch is a dependency; the wrapper stays usable without it)
        return
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _call(fn: Callable[..., Any], num_cpus: float, *args: Any) -> Any:
    """What each Ray task runs: pin threads, then `fn(*args)` (Ray has resolved the object-store references)."""
    _pin_threads(num_cpus)
    return fn(*args)


def _check(num_cpus: float, num_gpus: float, max_retries: int) -> None:
    if num_cpus <= 0 or num_gpus < 0 or max_retries < 0:
        raise ValueError(f"num_cpus must be > 0, num_gpus and max_retries >= 0; got {num_cpus}, {num_gpus}, "
                         f"{max_retries}")


def iter_tasks(
    fn: Callable[..., Any],
    args_list: Sequence[tuple[Any, ...]],
    *,
    ray: RaySpec = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_retries: int = 3,
) -> Iterator[tuple[int, Any]]:
    """`(i, fn(*args_list[i]))` as each task finishes (in order when in process): for callers that write each
    result away at once (a harvest's shards) instead of holding all of them. Same semantics as `run_tasks`;
    closing the generator early cancels the tasks still pending."""
    args_list = [tuple(a) for a in args_list]
    _check(num_cpus, num_gpus, max_retries)
    if not ray_enabled(ray):
        for i, args in enumerate(args_list):
            yield i, fn(*args)
        return
    if not args_list:
        return
    ray_mod = _connect(ray)
    from ray.exceptions import RayTaskError

    remote = ray_mod.remote(_call).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
                                           retry_exceptions=False)
    fn_ref = ray_mod.put(fn)
    shared: dict[int, Any] = {}  # an argument object given to many tasks (a dataset) goes to the object store once

    def ref(a: Any) -> Any:
        if a is None or isinstance(a, (bool, int, float, str, bytes)):
            return a
        if id(a) not in shared:
            shared[id(a)] = ray_mod.put(a)
        return shared[id(a)]

    refs = [remote.remote(fn_ref, num_cpus, *(ref(a) for a in args)) for args in args_list]
    index = {r: i for i, r in enumerate(refs)}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray_mod.wait(pending, num_returns=1)
            for r in ready:
                try:
                    value = ray_mod.get(r)
                except RayTaskError as e:  # fn raised: the same exception type, with the remote traceback
                    raise e.as_instanceof_cause() from None
                yield index[r], value
    finally:
        for r in pending:
            ray_mod.cancel(r, force=True)


def run_tasks(
    fn: Callable[..., Any],
    args_list: Sequence[tuple[Any, ...]],
    *,
    ray: RaySpec = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_retries: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """`[fn(*args) for args in args_list]`, in that order, in this process or as Ray tasks.

    Each Ray task declares `num_cpus` and `num_gpus` (Ray places it on a node that has them, and the task's
    torch uses `num_cpus` threads); a task whose worker process dies is rerun up to `max_retries` times,
    while an exception `fn` raises is not retried and is raised here as the same exception type.
    `progress(done, total)` is called in this process after each finished task. `fn` and the args must
    pickle (a module-level function; the package must be importable on every node)."""
    args_list = [tuple(a) for a in args_list]
    results: list[Any] = [None] * len(args_list)
    for done, (i, value) in enumerate(iter_tasks(fn, args_list, ray=ray, num_cpus=num_cpus, num_gpus=num_gpus,
                                                 max_retries=max_retries), start=1):
        results[i] = value
        if progress is not None:
            progress(done, len(args_list))
    return results


# ------------------------------------------------------------------ files made by a task, carried back as bytes

def read_tree(root: str | Path) -> dict[str, bytes]:
    """Every file under `root` as {relative posix path: bytes}: what a task wrote on its node, to return."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_tree(root: str | Path, files: Mapping[str, bytes]) -> None:
    """Write `read_tree`'s files under `root`, each atomically (temporary name, then rename)."""
    root = Path(root)
    for rel, data in files.items():
        dst = root / rel
        if ".." in Path(rel).parts:
            raise ValueError(f"refusing to write {rel!r} outside {root}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dst)


# ---------------------------------------------------------------------- a model loaded once per worker process

_MODELS: dict[tuple[str, str, str, str], Any] = {}


def worker_model(spec: tuple[str, str, str, str, str]) -> Any:
    """The model `model_spec` describes, loaded once per worker process (Ray reuses workers between tasks).

    It is loaded from the caller's checkpoint folder under the caller's name (results record the name), and
    weights that differ from the caller's (another file at that path on this node, or weights the caller
    edited in memory) are an error rather than a silently different result."""
    name, path, device, dtype, checksum = spec
    key = (name, path, device, dtype)
    if key not in _MODELS:
        from interp.models import load

        _MODELS.clear()  # one model per worker: a new one replaces the last
        if device.startswith("cuda:"):  # a GPU task sees only the GPU(s) Ray gave it, numbered from 0
            import torch

            if int(device.split(":")[1]) >= torch.cuda.device_count():
                device = "cuda"
        m = load(path, device=device, dtype=dtype)
        m.name = name
        _MODELS[key] = m
    m = _MODELS[key]
    if m.checksum != checksum:
        raise ValueError(f"the model at {path} on this Ray worker has checksum {m.checksum[:12]}, the caller's "
                         f"{checksum[:12]}: every node must see the same checkpoint (and weights edited in memory "
                         f"are not shipped: save them and load the saved folder)")
    return m


def model_spec(model: Any) -> tuple[str, str, str, str, str]:
    """(name, folder, device, dtype name, checksum) of a loaded `interp.models.Model`: what a task needs to
    load the same model on a worker with `worker_model`."""
    dtype = str(next(model.hf.parameters()).dtype).removeprefix("torch.")
    return model.name, str(model.path), str(model.device), dtype, model.checksum


__all__ = ["RaySpec", "iter_tasks", "model_spec", "parse_ray_option", "ray_enabled", "read_tree", "run_tasks",
           "start_local", "worker_model", "write_tree"]
