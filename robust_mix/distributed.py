"""Processes started by ``torchrun``: which rank this is, its device, its share of the work and its seeds.

``torchrun --nproc-per-node N -m robust_mix.cli ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; :func:`init_distributed` joins the process group (NCCL on GPUs, Gloo on CPUs).
Without those variables everything here degrades to one process, so library code never has to
ask whether it runs distributed.

Seeds: every random stream is derived from one recipe seed and the keys that name the stream
(rank, epoch, step, shard, ...), so a resumed run draws exactly what the uninterrupted run drew.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Union

import numpy as np
import torch
import torch.distributed as dist

from robust_mix.validate import InvalidInputError, check_device

logger = logging.getLogger(__name__)

#: How long a rank waits for the others at a collective (seconds); long, because one rank may
#: still be generating an adversarial-example shard or evaluating while the others wait.
DEFAULT_TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run.

    Attributes:
        rank, world_size: position among all processes and their number (0 and 1 alone).
        local_rank: position on this machine (selects the GPU).
        device: where this process computes.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        for name in ("rank", "world_size", "local_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInputError(f"DistContext {name} must be an integer, got {value!r}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise InvalidInputError(f"DistContext(rank={self.rank}, world_size={self.world_size}, local_rank="
                                    f"{self.local_rank}) is not a place in a run: world_size must be >= 1, rank "
                                    "from 0 to world_size - 1 and local_rank >= 0")

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and draws progress (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def backend(self) -> Optional[str]:
        """``"nccl"`` or ``"gloo"`` when distributed, else ``None``."""
        if not self.distributed:
            return None
        return "nccl" if self.device.type == "cuda" else "gloo"

    def barrier(self) -> None:
        """Wait for every rank (no-op alone)."""
        if self.distributed:
            dist.barrier()

    def all_reduce_sums(self, values: Mapping[str, float]) -> dict[str, float]:
        """Sum each value over all ranks (float64 on the wire); the same dict alone."""
        if not self.distributed or not values:
            return {k: float(v) for k, v in values.items()}
        keys = sorted(values)
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return dict(zip(keys, tensor.cpu().tolist()))

    def all_max(self, value: float) -> float:
        """The largest ``value`` over all ranks (agreeing on a count, e.g. a resume point)."""
        if not self.distributed:
            return float(value)
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.item()

    def shard(self, n: int) -> range:
        """This rank's positions of ``range(n)``: ``rank, rank + world_size, ...``."""
        return range(self.rank, n, self.world_size)


def env_int(name: str, default: int) -> int:
    """The integer in environment variable ``name`` (torchrun's ``WORLD_SIZE``, ``RANK``, ...), ``default`` if unset.

    Raises:
        ValueError: the variable is set to something other than an integer, naming it.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer (torchrun sets it)") from None


_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
#: Where the processes of a run meet (torch's ``env://`` rendezvous); torchrun sets both.
_RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT")


def torchrun_place() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment variables (``(0, 1, 0)`` when unset).

    Raises:
        robust_mix.validate.InvalidInputError: a variable is not an integer, or they disagree (a rank outside
            ``0 .. WORLD_SIZE - 1``, ``LOCAL_RANK`` outside ``0 .. LOCAL_WORLD_SIZE - 1``, more processes on
            this machine than in the run): a process that is not rank 0 of the run it thinks it is in would
            train without writing anything, or join a group that never forms.
    """
    try:
        world, rank, local_rank = env_int("WORLD_SIZE", 1), env_int("RANK", 0), env_int("LOCAL_RANK", 0)
        local_world = env_int("LOCAL_WORLD_SIZE", 0) if "LOCAL_WORLD_SIZE" in os.environ else None
    except ValueError as err:
        raise InvalidInputError(str(err)) from None
    problems = []
    if world < 1:
        problems.append(f"WORLD_SIZE={world} is not a number of processes (>= 1)")
    elif not 0 <= rank < world:
        problems.append(f"RANK={rank} is not one of the ranks 0 .. {world - 1} of WORLD_SIZE={world}")
    if local_world is not None:
        if not 1 <= local_world <= max(world, 1):
            problems.append(f"LOCAL_WORLD_SIZE={local_world} is not from 1 to WORLD_SIZE={world}")
        elif not 0 <= local_rank < local_world:
            problems.append(f"LOCAL_RANK={local_rank} is not one of 0 .. {local_world - 1} "
                            f"(LOCAL_WORLD_SIZE={local_world})")
    elif local_rank < 0:
        problems.append(f"LOCAL_RANK={local_rank} is negative")
    if problems:
        shown = ", ".join(f"{k}={os.environ[k]!r}" for k in _TORCHRUN_VARIABLES if k in os.environ)
        raise InvalidInputError(f"torchrun's environment variables disagree ({shown}): {'; '.join(problems)}; "
                                "start the command with torchrun, or unset " + ", ".join(_TORCHRUN_VARIABLES)
                                + " to run as one process")
    return rank, world, local_rank


#: Seconds a rank waits for the others at a collective (default :data:`DEFAULT_TIMEOUT_S`).
TIMEOUT_ENV_VAR = "ROBUST_MIX_DIST_TIMEOUT"


def dist_timeout() -> datetime.timedelta:
    """How long a rank waits for the others: ``$ROBUST_MIX_DIST_TIMEOUT`` seconds (empty is unset), else 4 hours.

    Raises:
        robust_mix.validate.InvalidInputError: not a whole number of seconds from 1 up, naming the variable and its
            value (text was a ValueError that said torchrun sets it; 0 or a negative number reached torch's process
            group, which gave up at once or at its first collective).
    """
    raw = os.environ.get(TIMEOUT_ENV_VAR, "").strip()
    if not raw:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise InvalidInputError(f"environment variable {TIMEOUT_ENV_VAR}={os.environ[TIMEOUT_ENV_VAR]!r} must be a "
                                "whole number of seconds >= 1 (how long a rank waits for the others); set it, e.g. "
                                f"{TIMEOUT_ENV_VAR}=3600, or unset it for the default {DEFAULT_TIMEOUT_S} s")
    return datetime.timedelta(seconds=seconds)


def init_distributed(device: Union[str, torch.device, None] = None) -> DistContext:
    """Join the torchrun process group if there is one; the context for this process.

    Args:
        device: ``"cuda"``, ``"cpu"`` or a device; ``None`` picks CUDA when available. Under
            torchrun, ``"cuda"`` becomes ``cuda:<LOCAL_RANK>``.

    Raises:
        robust_mix.validate.InvalidInputError: the device does not exist here (no GPU visible, an index
            beyond the GPUs, a name torch does not know), or several processes are asked for without
            ``MASTER_ADDR``/``MASTER_PORT`` (torchrun sets them); a ``ValueError``.
    """
    rank, world_size, local_rank = torchrun_place()
    requested = check_device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if requested.type == "cuda" and requested.index is None:
        requested = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        # more processes on this machine than GPUs: named here, not met as 'invalid device ordinal'
        requested = check_device(requested, f"device of LOCAL_RANK={local_rank}")
    context = DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=requested)
    missing = [k for k in _RENDEZVOUS_VARIABLES if not os.environ.get(k)]
    if context.distributed and not dist.is_initialized() and missing:
        # torch's env:// rendezvous would end with its own message, or wait for its timeout
        verb = "is" if len(missing) == 1 else "are"
        raise InvalidInputError(f"WORLD_SIZE={world_size} asks for {world_size} processes, but "
                                f"{' and '.join(missing)} (where they meet) {verb} not set; start the command with "
                                "torchrun, which sets them, or unset "
                                + ", ".join(k for k in _TORCHRUN_VARIABLES if k in os.environ) + " to run as one process")
    timeout = dist_timeout() if context.distributed else None  # a bad value: said before anything starts
    if requested.type == "cuda":
        torch.cuda.set_device(requested)
    if context.distributed and not dist.is_initialized():
        dist.init_process_group(backend=context.backend, timeout=timeout)
        logger.info("rank %d of %d joined the %s process group on %s", rank, world_size, context.backend,
                    requested)
    return context


def finish_distributed() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_run(device: Union[str, torch.device, None] = None) -> Iterator[DistContext]:
    """``with distributed_run("cpu") as ctx: ...``: :func:`init_distributed`, then always :func:`finish_distributed`."""
    context = init_distributed(device)
    try:
        yield context
    finally:
        finish_distributed()


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the random stream named by ``keys`` (e.g. rank, epoch, step), from one ``seed``.

    Different keys give independent streams (NumPy's ``SeedSequence``), the same keys the same seed.
    """
    state = np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` ``(seed, *keys)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))
