"""CPU threads per process: one policy for every command that computes.

Two evaluations side by side with torch's default threads each spin on every core and slow each
other down about 12x on a 2-core machine (issue 14); one process with more threads than it has
CPUs (a cgroup quota, ``taskset``) suffers the same way. The policy:

    threads = max(1, CPUs this process may use // processes sharing them)

* **CPUs this process may use**: its affinity mask (``os.sched_getaffinity``) capped by the cgroup
  CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``).
* **processes sharing them**: the larger of the processes a launcher declares (torchrun's
  ``LOCAL_WORLD_SIZE``, the worker processes :mod:`robust_mix.parallel` starts) and the robust_mix
  runs that hold a *claim* on this machine: each process that applies the policy registers itself
  in a per-user folder (``$ROBUST_MIX_RUNTIME_DIR``, default ``<tmp>/robust_mix-<uid>/claims``),
  so two independently started runs see each other. A run started first gives up threads when a
  second one appears: long loops call :func:`rebalance` (the attack harness does, per attack batch).

An explicit choice always wins, in this order: the ``threads`` argument (``--threads`` on the
command line), ``$ROBUST_MIX_THREADS``, ``$OMP_NUM_THREADS``. The choice is logged once per
process, with a warning when the machine is already busy (1-minute load average at least the
machine's CPUs: timings will be slow).
"""
from __future__ import annotations

import logging
import math
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import torch

from robust_mix.allocator import apply_allocator_policy

logger = logging.getLogger(__name__)

ENV_VAR = "ROBUST_MIX_THREADS"
RUNTIME_ENV_VAR = "ROBUST_MIX_RUNTIME_DIR"
#: Seconds between two recounts of the claims in :func:`rebalance`.
REBALANCE_INTERVAL_S = 2.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Where the OS lists its processes (none on macOS and Windows: claims then fall back to ``os.kill(pid, 0)``).
PROC = Path("/proc")


@dataclass(frozen=True)
class ThreadPlan:
    """The decision: ``threads`` per process and why.

    Attributes:
        threads: intra-op threads for this process.
        source: ``"argument"``, ``"ROBUST_MIX_THREADS"``, ``"OMP_NUM_THREADS"`` or ``"policy"``.
        usable_cpus: CPUs this process may use (affinity capped by the cgroup quota; may be fractional).
        processes: processes sharing those CPUs (declared, or robust_mix runs holding a claim).
        load_average: 1-minute load average when planned (``None`` where the OS has none).
        machine_cpus: CPUs the load average is spread over: the whole machine's (``os.cpu_count()``),
            which inside a container or under ``taskset`` is more than this process may use.
    """

    threads: int
    source: str
    usable_cpus: float
    processes: int
    load_average: Optional[float]
    machine_cpus: Optional[int] = None

    @property
    def busy(self) -> bool:
        """True when the machine was already loaded: the load average reached its CPUs.

        The load average counts runnable tasks of the whole machine (a container sees its host's),
        so it is compared with the machine's CPUs, not with the share this process may use: under
        a quota of 2 CPUs on a 64-CPU host, a host load of 10 leaves the quota free.
        """
        cpus = self.machine_cpus if self.machine_cpus is not None else self.usable_cpus
        return self.load_average is not None and self.load_average >= max(cpus, self.usable_cpus)

    def describe(self) -> str:
        why = ("policy: usable CPUs // processes" if self.source == "policy"
               else f"set by {'--threads' if self.source == 'argument' else '$' + self.source}")
        return (f"{self.threads} thread(s) per process ({why}; {self.usable_cpus:g} usable CPU(s), "
                f"{self.processes} process(es))")


# -- what the machine gives this process ---------------------------------------------------------------
def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (all CPUs where the OS has no affinity call)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> Optional[float]:
    """The CPU quota of this process's cgroup in CPUs (``1.5`` = 150 % of one CPU), ``None`` if unlimited.

    Reads cgroup v2 (``<root>/<path>/cpu.max``: ``"<quota> <period>"`` or ``"max <period>"``) and v1
    (``<root>/cpu/<path>/cpu.cfs_quota_us``, ``-1`` = unlimited), walking up from the process's own
    cgroup to the root (a parent's limit applies too); the smallest limit wins.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    limits = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:  # not "<id>:<controllers>:<path>"
            continue
        _, controllers, path = fields
        if controllers == "":  # v2 unified hierarchy
            limits += [_v2_limit(d / "cpu.max") for d in _up_from(root, path)]
        elif "cpu" in controllers.split(","):
            base = root / controllers if (root / controllers).is_dir() else root / "cpu"
            limits += [_v1_limit(d) for d in _up_from(base, path)]
    known = [q for q in limits if q is not None]
    return min(known) if known else None


def _up_from(base: Path, path: str) -> list[Path]:
    """``base/path`` and its parents up to ``base``; a path leaving ``base`` (``/../x``: a process outside its
    cgroup namespace's root) leaves only ``base``, since the folders above the mount are no cgroups."""
    parts = [p for p in path.strip("/").split("/") if p and p != "."]
    if ".." in parts:
        return [base]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _cpus(quota: str, period: str) -> Optional[float]:
    """``quota / period`` in CPUs; ``None`` for no limit (``max``, ``-1``) and for text that is not a positive limit."""
    try:
        cpus = float(quota) / float(period)
    except (ValueError, ZeroDivisionError):
        return None
    return cpus if math.isfinite(cpus) and cpus > 0 else None


def _v2_limit(path: Path) -> Optional[float]:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, UnicodeDecodeError, ValueError):  # missing, unreadable, or not "<quota> <period>"
        return None
    return None if quota == "max" else _cpus(quota, period)


def _v1_limit(folder: Path) -> Optional[float]:
    try:
        quota = (folder / "cpu.cfs_quota_us").read_text().strip()
        period = (folder / "cpu.cfs_period_us").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return _cpus(quota, period)


def usable_cpus() -> float:
    """CPUs this process may really use: the affinity mask capped by the cgroup quota."""
    quota = cgroup_cpu_quota()
    cpus = float(affinity_cpus())
    return min(cpus, quota) if quota is not None else cpus


def load_average() -> Optional[float]:
    """The 1-minute load average, ``None`` where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# -- claims: robust_mix runs on this machine that compute -------------------------------------------------
def claims_dir() -> Path:
    """The per-user folder where computing robust_mix processes register.

    Raises:
        OSError: ``$ROBUST_MIX_RUNTIME_DIR`` is unset and there is no usable temporary folder.
    """
    root = os.environ.get(RUNTIME_ENV_VAR)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(root).expanduser() if root else Path(tempfile.gettempdir()) / f"robust_mix-{uid}" / "claims"


def _own_folder(folder: Path) -> bool:
    """Whether ``folder`` is a folder (not a link) of this user that no other user can write to. Claims are written
    and read there, in the shared temporary folder by default: a ``robust_mix-<uid>`` folder made by another user
    first could hold links to this user's files (a claim written through one overwrites the file) or FIFOs (read,
    they block forever). A folder that is not is used for nothing (logged)."""
    try:
        info = folder.lstat()
    except OSError:
        return False
    mine = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    if stat.S_ISDIR(info.st_mode) and mine and not info.st_mode & 0o022:
        return True
    logger.warning("%s is not a folder of this user that only this user can write to (a link, another user's, or "
                   "group- or world-writable): robust_mix's thread claims are not kept there; remove it, or set %s to "
                   "a folder of yours", folder, RUNTIME_ENV_VAR)
    return False


def _start_time(pid: int) -> Optional[str]:
    """The process's start time (clock ticks since boot), which tells a live pid from a reused one."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _claim_is_live(pid: int, recorded: str) -> bool:
    """Whether process ``pid`` is running and is the one that wrote ``recorded`` (its start time, if known)."""
    if pid <= 0:
        return False
    started = _start_time(pid)
    if started is not None:
        return not recorded or recorded == started
    if PROC.is_dir():  # the OS lists its processes, and not this one
        return False
    try:  # no /proc (macOS): a pid that exists; a reused one cannot be told apart there
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


class ThreadClaim:
    """This process's registration as a computing robust_mix run (a file named by its pid)."""

    def __init__(self, folder: Optional[Path] = None) -> None:
        if folder is None:
            try:
                folder = claims_dir()
            except OSError as err:  # no usable temporary folder: this run just cannot register
                logger.debug("no folder for thread claims (%s); other runs will not see this one", err)
        self.folder: Optional[Path] = folder
        self.path: Optional[Path] = None if folder is None else folder / str(os.getpid())
        self.held = False

    def acquire(self) -> "ThreadClaim":
        """Write the claim; a folder that cannot be written (read-only, full, not ours) is logged, not raised."""
        if self.folder is None or self.path is None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not _own_folder(self.folder):
                return self
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)  # never through a link
            with os.fdopen(os.open(self.path, flags, 0o600), "w") as handle:
                handle.write(_start_time(os.getpid()) or "")
            self.held = True
        except OSError as err:  # a read-only tmp must not stop an evaluation
            configured = os.environ.get(RUNTIME_ENV_VAR)
            if configured and claims_dir() == self.folder:  # the user's own choice: said, not only in debug
                logger.warning("%s=%r cannot hold robust_mix's thread claims (%s): this run goes on unregistered, "
                               "and others sharing the CPUs will not count it; set %s to a folder of yours that you "
                               "can write, or unset it", RUNTIME_ENV_VAR, configured, err.strerror or err,
                               RUNTIME_ENV_VAR)
            else:
                logger.debug("could not register %s (%s); other runs will not see this one", self.path, err)
        return self

    def release(self) -> None:
        """Remove the claim; a file that cannot be removed is logged (its process ends, so it goes stale)."""
        if self.held and self.path is not None:
            self.held = False
            try:
                self.path.unlink(missing_ok=True)
            except OSError as err:
                logger.debug("could not remove the thread claim %s (%s)", self.path, err)


def live_claims(folder: Optional[Path] = None) -> int:
    """Robust_mix processes on this machine holding a claim (stale files of dead processes are removed)."""
    try:
        folder = folder or claims_dir()
        entries = list(folder.iterdir())
    except OSError:  # no folder yet, or no usable temporary folder
        return 0
    if not _own_folder(folder):
        return 0
    alive = 0
    for entry in entries:
        if not (entry.name.isascii() and entry.name.isdigit()):
            continue
        try:
            if not stat.S_ISREG(entry.lstat().st_mode):  # a link or a FIFO: no claim this module wrote
                continue
        except OSError:
            continue
        try:
            recorded = entry.read_bytes().decode("ascii").strip()
        except UnicodeDecodeError:  # not a start time this module wrote
            recorded = "?"
        except OSError:
            continue
        if _claim_is_live(int(entry.name), recorded):
            alive += 1
            continue
        try:
            entry.unlink(missing_ok=True)
        except OSError as err:  # a read-only folder, another user's file: count it out all the same
            logger.debug("could not remove the stale thread claim %s (%s)", entry, err)
    return alive


# -- the policy --------------------------------------------------------------------------------------------
def _positive_int(value: object, what: str, unit: str = "threads") -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        hint = ("torchrun sets it; unset it outside torchrun" if unit == "processes"
                else "use e.g. 1 or 2, or leave it unset for the policy (usable CPUs // processes)")
        raise ValueError(f"{what} must be a positive whole number of {unit}, got {value!r}; {hint}")
    return number


#: The most threads a process may be given. Threads beyond the CPUs only wait on each other, and far beyond them
#: the libraries fail in ways that name other causes (100,000 made oneDNN's convolutions fail with "could not create
#: a primitive", read as a model that does not fit its images; 10**23 overflowed torch.set_num_threads).
MAX_THREADS = 1024


def check_threads(value: object, what: str = "threads") -> int:
    """A thread count (``--threads``, ``$ROBUST_MIX_THREADS``, a worker's threads): a whole number from 1 to
    :data:`MAX_THREADS`; the one rule of every explicit thread count. Raises ``ValueError`` naming ``what``."""
    number = _positive_int(value, what)
    if number > MAX_THREADS:
        cpus = os.cpu_count()
        raise ValueError(f"{what} must be at most {MAX_THREADS} threads, got {value!r}"
                         + (f" (this machine has {cpus} CPUs; threads beyond them only wait on each other)"
                            if cpus else "") + "; use e.g. 1 or 2, or leave it unset for the policy")
    return number


#: ``$OMP_NUM_THREADS`` values already warned about (the plan is made again at every rebalance).
_IGNORED_OMP: set[str] = set()


def _omp_threads(text: str) -> Optional[int]:
    """``$OMP_NUM_THREADS`` as the outer level's thread count (``"4,2"`` -> 4); ``None`` if unusable
    (warned about once per value)."""
    try:
        return check_threads(text.split(",")[0], "OMP_NUM_THREADS")
    except ValueError:
        if text not in _IGNORED_OMP:
            _IGNORED_OMP.add(text)
            logger.warning("ignoring OMP_NUM_THREADS=%r: not a whole number from 1 to %d; the policy chooses", text,
                           MAX_THREADS)
        return None


def plan_threads(requested: Optional[int] = None, *, processes: Optional[int] = None,
                 environ: Optional[Mapping[str, str]] = None, cpus: Optional[float] = None,
                 claims: Optional[int] = None) -> ThreadPlan:
    """Decide the threads of this process without setting them (see :func:`apply_thread_policy`).

    Args:
        requested: an explicit thread count (``--threads``); wins over everything.
        processes: processes the caller starts to share the CPUs (e.g. parallel workers);
            default ``$LOCAL_WORLD_SIZE`` (torchrun), else 1.
        environ: the environment to read (default ``os.environ``).
        cpus: usable CPUs (default :func:`usable_cpus`).
        claims: robust_mix runs holding a claim (default :func:`live_claims`).
    """
    env = os.environ if environ is None else environ
    cpus = usable_cpus() if cpus is None else cpus
    local_world = env.get("LOCAL_WORLD_SIZE", "").strip() or "1"  # empty: unset
    declared = processes if processes is not None else _positive_int(local_world, "LOCAL_WORLD_SIZE",
                                                                      "processes")
    sharing = max(1, declared, live_claims() if claims is None else claims)
    load, machine = load_average(), os.cpu_count()
    if requested is not None:
        return ThreadPlan(check_threads(requested), "argument", cpus, sharing, load, machine)
    if env.get(ENV_VAR, "").strip():
        return ThreadPlan(check_threads(env[ENV_VAR], ENV_VAR), ENV_VAR, cpus, sharing, load, machine)
    omp = _omp_threads(env["OMP_NUM_THREADS"]) if env.get("OMP_NUM_THREADS", "").strip() else None
    if omp is not None:
        return ThreadPlan(omp, "OMP_NUM_THREADS", cpus, sharing, load, machine)
    return ThreadPlan(max(1, math.floor(cpus / sharing)), "policy", cpus, sharing, load, machine)


class _State:
    """What this process applied: the plan, its claim, the declared processes, the last recount."""

    plan: Optional[ThreadPlan] = None
    claim: Optional[ThreadClaim] = None
    requested: Optional[int] = None
    processes: Optional[int] = None
    checked: float = 0.0


def apply_thread_policy(requested: Optional[int] = None, *, processes: Optional[int] = None,
                        warn_if_busy: bool = True) -> ThreadPlan:
    """Register this process as a computing run, plan its threads and set them in torch.

    Call before any work (the CLI does, for every command that computes). Sets
    ``torch.set_num_threads`` and, while torch still allows it, ``set_num_interop_threads``.
    The plan is logged once per process (again only if it changes). Also applies the heap policy
    (:func:`robust_mix.allocator.apply_allocator_policy`, once per process). Returns the plan.
    """
    apply_allocator_policy()
    if _State.claim is None:
        _State.claim = ThreadClaim().acquire()
    _State.requested, _State.processes = requested, processes
    plan = plan_threads(requested, processes=processes)
    _set(plan)
    if warn_if_busy and plan.busy:
        logger.warning("the machine is already busy (1-minute load average %.2f on its %d CPUs): "
                       "timings will be slower than on an idle machine", plan.load_average,
                       plan.machine_cpus or plan.usable_cpus)
    return plan


def _set(plan: ThreadPlan) -> None:
    if plan.threads > plan.usable_cpus >= 1:
        logger.warning("%d threads on %g usable CPUs: threads will wait on each other", plan.threads,
                       plan.usable_cpus)
    torch.set_num_threads(plan.threads)
    try:
        torch.set_num_interop_threads(plan.threads)
    except RuntimeError:  # allowed only before the first inter-op parallel work
        pass
    if _State.plan is None or plan.threads != _State.plan.threads:
        logger.info("threads: %s", plan.describe())
    _State.plan, _State.checked = plan, time.monotonic()


def rebalance() -> Optional[ThreadPlan]:
    """Recount the robust_mix runs sharing the CPUs and adjust this process's threads.

    Cheap (at most one folder listing every :data:`REBALANCE_INTERVAL_S` seconds); does nothing unless
    :func:`apply_thread_policy` chose the threads by the policy in this process. Call between units
    of work in long loops; must run on the thread that does the work (OpenMP settings are per thread).
    """
    plan = _State.plan
    if plan is None or plan.source != "policy" or time.monotonic() - _State.checked < REBALANCE_INTERVAL_S:
        return plan
    new = plan_threads(_State.requested, processes=_State.processes)
    _set(new)
    return new


def release_claim() -> None:
    """Withdraw this process's claim (at the end of a command; other runs may then take its CPUs)."""
    if _State.claim is not None:
        _State.claim.release()
        _State.claim = None


def suspend_claim() -> "_Suspended":
    """Context in which this process does not count (while worker processes compute for it)."""
    return _Suspended()


class _Suspended:
    def __enter__(self) -> None:
        self.claim = _State.claim
        if self.claim is not None:
            self.claim.release()

    def __exit__(self, *exc: object) -> None:
        if self.claim is not None:
            self.claim.acquire()
