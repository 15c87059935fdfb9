"""Where training runs: device parsing, process count, a free port and the worker processes.

``resolve_device("gpu:0,1")`` -> ``"cuda"``; ``num_processes("gpu:0,1", 1)`` -> 2. ``launch(fn, job,
n, device)`` runs ``fn(job)`` in this process (``n == 1``) or in ``n`` spawned processes joined in one
``torch.distributed`` group (NCCL on GPUs, gloo on the CPU) and returns what the main process's
``fn`` returned, read back from the run directory's ``train_result.json``.

Started by ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``, e.g. ``srun`` with those exported), ``launch`` spawns nothing:
this process joins that job's group (``env://``; NCCL on GPUs — each process on GPU ``LOCAL_RANK`` —,
gloo on the CPU), so one training can span machines. Rank 0 alone writes the run directory and
evaluates; the other ranks wait for it at every evaluation.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import TrainingDivergedError, TrainingFailedError


def resolve_device(device: str | None) -> str:
    """``None`` -> the GPU if there is one; ``gpu``/``gpu:0``/``gpu:0,1``/``cuda:0``/``cpu``."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    d = str(device).strip().lower()
    if d.startswith("gpu"):
        d = "cuda" + d[3:]
    if d.startswith("cuda"):
        if "," in d:  # several GPUs: one process per GPU, each picks its own
            d = "cuda"
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for a GPU but torch sees none; use device='cpu'")
    elif d != "cpu":
        raise ValueError(f"unknown device {device!r} (use cpu, gpu, gpu:N or gpu:0,1)")
    return d


ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def external_group() -> dict | None:
    """The process group an outside launcher (``torchrun``, SLURM) describes in the environment:
    ``{"rank", "world", "local_rank", "local_world"}``, or ``None`` when not started that way."""
    env = os.environ
    if not all(k in env for k in ENV_KEYS):
        return None
    world = int(env["WORLD_SIZE"])
    return {
        "rank": int(env["RANK"]),
        "world": world,
        "local_rank": int(env["LOCAL_RANK"]),
        "local_world": int(env.get("LOCAL_WORLD_SIZE", world)),
    }


def local_rank() -> int:
    """This process's index on its machine (its GPU)."""
    ext = external_group()
    return ext["local_rank"] if ext else dist_info()[0]


def num_processes(device: str | None, requested: int = 1) -> int:
    """Processes to train with: the outside launcher's world size when there is one, else
    ``requested`` if > 1, else one per GPU listed in ``gpu:0,1``."""
    ext = external_group()
    if ext is not None:
        return ext["world"]
    if int(requested) > 1:
        return int(requested)
    d = str(device or "").lower()
    if d.startswith(("gpu:", "cuda:")) and "," in d:
        return len([x for x in d.split(":", 1)[1].split(",") if x.strip()])
    return 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _worker(rank: int, world: int, url: str, device: str, fn: Callable, job: Any, init: Callable | None) -> None:
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=url, world_size=world, rank=rank)
    if not cuda:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        if init is not None:
            init(rank, world)
        fn(job)
    finally:
        dist.destroy_process_group()


def launch(
    fn: Callable[[Any], dict | None],
    job: Any,
    n: int,
    device: str,
    output: str | os.PathLike,
    worker_init: Callable[[int, int], None] | None = None,
) -> dict:
    """Run ``fn(job)`` in ``n`` processes; return the run's ``train_result.json``."""
    ext = external_group()
    if ext is not None and ext["world"] > 1:
        return _join(fn, job, device, output, worker_init, ext)
    if int(n) <= 1:
        return fn(job)
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() < n:
        raise ValueError(f"num_processes={n} but only {torch.cuda.device_count()} GPUs are visible")
    import torch.multiprocessing as mp

    url = f"tcp://127.0.0.1:{free_port()}"
    result_path = Path(output) / "train_result.json"
    try:
        mp.spawn(_worker, nprocs=n, args=(n, url, device, fn, job, worker_init), daemon=False)
    except mp.ProcessRaisedException as e:
        err = None
        if result_path.is_file():
            err = json.loads(result_path.read_text()).get("error")
        if err and err.startswith("training stopped"):
            raise TrainingDivergedError(err) from None
        raise TrainingFailedError(
            f"a training process failed: {err or e} (log: {Path(output) / 'train.log'})"
        ) from None
    return json.loads(result_path.read_text())


def _join(fn: Callable, job: Any, device: str, output: str | os.PathLike, init: Callable | None, ext: dict) -> dict:
    """``fn(job)`` as one rank of the outside launcher's group; rank 0 returns ``train_result.json``,
    the others it too when the run directory is on a shared file system, else what they know."""
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(ext["local_rank"])
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
    try:
        if init is not None:
            init(ext["rank"], ext["world"])
        res = fn(job)
    finally:
        if created:
            dist.destroy_process_group()
    if res is not None:
        return res
    result_path = Path(output) / "train_result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    return {
        "rank": ext["rank"],
        "world_size": ext["world"],
        "paths": {},
        "note": "rank 0 writes the run directory (on another machine)",
    }
