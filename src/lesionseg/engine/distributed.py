"""Process-group and DistributedDataParallel plumbing (the device itself is resolved by :mod:`lesionseg.runtime`).

Under ``torchrun`` every process reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
from its environment; :func:`init_distributed` joins the process group from them (``nccl`` on CUDA, ``gloo`` on CPU).
Without those variables a run is one process and every helper here degrades to the single-process answer (rank 0 of
1, reductions are identities), so the trainer has one code path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..runtime import env_world_size, resolve_device

__all__ = [
    "DistContext",
    "all_gather_objects",
    "all_reduce_max",
    "all_reduce_sum",
    "barrier",
    "cleanup_distributed",
    "configure_backends",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "unwrap_model",
    "wrap_model",
]

_logger = logging.getLogger(__name__)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes files and logs."""
    return get_rank() == 0


def configure_backends(device: torch.device, deterministic: bool = False) -> None:
    """cuDNN autotuning on GPU for speed, or deterministic kernels everywhere when asked.

    ``deterministic`` turns off ``cudnn.benchmark``, selects deterministic cuDNN algorithms and asks torch for
    deterministic implementations (warning, not failing, where an op has none), at some cost in speed.
    """
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        if deterministic:
            # cuBLAS needs a fixed workspace to be reproducible; it reads this once, at its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class DistContext:
    """Where this process computes and its place in the process group.

    Attributes:
        device: the torch device of this process.
        rank: global rank (0 in a single-process run).
        world_size: number of processes (1 in a single-process run).
        initialized_here: whether :func:`init_distributed` created the process group (and so must destroy it).
    """

    device: torch.device
    rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_spec: str = "auto", deterministic: bool = False) -> DistContext:
    """Resolve the device and, under torchrun (``WORLD_SIZE`` > 1), join the process group.

    The backend is ``nccl`` when the device is CUDA and ``gloo`` on CPU. A group that already exists (a caller set
    one up) is used as it is. Call :func:`cleanup_distributed` with the returned context at the end.
    """
    device = resolve_device(device_spec)
    configure_backends(device, deterministic)
    if env_world_size() <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    created = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ValueError(
                f"WORLD_SIZE={env_world_size()} but {', '.join(missing)} unset: launch with torchrun "
                "(torchrun --nproc_per_node=N -m lesionseg train ...)"
            )
        kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://"}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        created = True
    ctx = DistContext(device, dist.get_rank(), dist.get_world_size(), created)
    if created:
        _logger.info("process group: rank %d of %d on %s (%s)", ctx.rank, ctx.world_size, device, dist.get_backend())
    return ctx


def cleanup_distributed(ctx: DistContext | None = None) -> None:
    """Destroy the process group if ``ctx`` created it (or, with no context, whenever one exists)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if ctx is None or ctx.initialized_here:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single-process run)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over processes, in place, returned for chaining (identity in a single-process run).

    nccl reduces tensors on the GPU, so the tensor should be on this process's device.
    """
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(value: float, device: torch.device | str = "cpu") -> float:
    """The largest of each process's ``value`` (e.g. epoch seconds, so time-budget decisions agree on every rank)."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable; pickled in memory between our own processes), in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_model(model: nn.Module, ctx: DistContext, sync_bn: bool = False, static_graph: bool = True) -> nn.Module:
    """``model`` on ``ctx.device``, inside DistributedDataParallel when the run has several processes.

    Args:
        model: the bare model.
        ctx: the process context.
        sync_bn: convert BatchNorm layers to SyncBatchNorm (statistics over the global batch; CUDA only).
        static_graph: tell DDP the set of parameters that receive gradients is the same every step; it then also
            tolerates parameters that never get one (heads the configured loss does not use).

    Raises:
        ValueError: ``sync_bn`` on a CPU run (SyncBatchNorm needs CUDA tensors and the nccl backend).
    """
    model = model.to(ctx.device)
    if not ctx.distributed:
        return model
    if sync_bn:
        if ctx.device.type != "cuda":
            raise ValueError("train.sync_bn needs CUDA (SyncBatchNorm has no CPU kernel); set it false on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids: Sequence[int] | None = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=static_graph)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
