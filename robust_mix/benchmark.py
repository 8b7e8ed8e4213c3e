"""The leaderboard harness: chunked, resumable, sharded AutoAttack evaluation.

The unit of work is a fixed *chunk* of consecutive examples. Each chunk is attacked on its own
with a seed derived from ``(seed, chunk index)``, and its progress (clean flags, flags after every
attack stage) is written atomically to ``state_dir`` after each stage. A run killed at any point
and restarted with the same arguments redoes at most one stage of one chunk, with the same inputs
and the same seed, so it ends with exactly the flags of an uninterrupted run. Under
``torchrun`` ranks take disjoint chunks and gather the flags; the chunk seeds make the result
independent of the number of processes.

>>> result = benchmark(model, "cifar10", eps=8 / 255, n_examples=10_000, state_dir="runs/x")
>>> result.robust_accuracy
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence, Union

import torch
from torch import nn

from robust_mix.attacks import StageRunner, is_mixednuts
from robust_mix.distributed import torchrun_place
from robust_mix.fastpath import fast_path
from robust_mix.fingerprint import model_code_fingerprint, model_fingerprint
from robust_mix.io import FolderLock, atomic_write_text
from robust_mix.config import ModelConfig
from robust_mix.registry import model_label
from robust_mix.protocol import (AttackOptions, AttackPlan, canonical_dataset, check_options, required_examples,
                                 resolve_attack)
from robust_mix.results import BenchmarkResult
from robust_mix.version import __version__
from robust_mix.validate import (InvalidInputError, NonFiniteOutputError, check_bool, check_callback, check_dataset,
                                 check_device, check_eps, check_eps_within_images, check_finite_outputs, check_model,
                                 check_model_examples, check_scores, check_seed, check_threat_model, check_wall_seconds,
                                 check_writable_dir, evaluates_model, layout_hint, model_num_classes,
                                 optional_positive_int, parse_json, positive_int)

logger = logging.getLogger(__name__)

_STATE_VERSION = 1
#: The progress stage of the clean pass over more images than are attacked (``clean_examples``).
FULL_CLEAN_STAGE = "clean-full"


class Progress(Protocol):
    """Receives progress events (the CLI draws tqdm bars from them)."""

    def start(self, stages: Sequence[str], total: int) -> None:
        """``stages`` (the clean passes first) will each process ``total`` examples of this rank;
        :data:`FULL_CLEAN_STAGE`, when asked for, reports ``total`` at once when it is done."""

    def advance(self, stage: str, n: int) -> None:
        """``n`` more examples went through ``stage`` (already-done chunks count too)."""


# -- helpers -----------------------------------------------------------------------------------
def chunk_seed(seed: int, chunk: int) -> int:
    """The attack seed of chunk ``chunk``: a hash of ``(seed, chunk)``, independent of sharding."""
    digest = hashlib.sha256(f"robust_mix:{seed}:{chunk}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def number_forward_passes(model: nn.Module) -> int:
    """Forward passes per prediction: 2 for a mixture, 1 when a fixed ratio is exactly 0 or 1."""
    if not hasattr(model, "is_adaptive"):
        return 1
    return 2 if model.is_adaptive or float(model.alpha) not in (0.0, 1.0) else 1


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for package in ("robust_mix", "torch", "torchvision", "pyautoattack", "robustbench", "timm"):
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            if package == "robust_mix":
                versions[package] = __version__
    return versions


def _data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256(x.detach().cpu().contiguous().float().numpy().tobytes())
    h.update(y.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_device() -> torch.device:
    """``cuda:<local rank>`` when a GPU is there, else the CPU.

    Raises:
        InvalidInputError: torchrun's variables are not integers or disagree (``LOCAL_RANK=abc`` was a bare
            ``ValueError: invalid literal for int()``), naming them (:func:`robust_mix.distributed.torchrun_place`).
    """
    if torch.cuda.is_available():
        _, _, local_rank = torchrun_place()
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


# no_grad, not inference_mode: a model that caches a tensor on its first call (RobustBench's DM networks keep
# `mean_cuda`, made on the first CUDA forward) would otherwise keep an inference tensor that the attacks'
# backward passes cannot use (measured on an H200, docs/harness.md); the kernels are the same.
@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device,
            indices: Optional[Sequence[int]] = None, what: str = "the model") -> torch.Tensor:
    """Predicted classes ``(N,)`` (on the CPU) for images ``(N, C, H, W)``, in batches.

    The model must be in eval mode: in training mode BatchNorm would normalise with each batch's
    statistics (and update its running ones) and dropout would drop units, so predictions would
    depend on the batch and change the model.

    Raises:
        robust_mix.validate.InvalidInputError: ``batch_size`` is not a positive integer, the model (or one
            of its modules) is in training mode, or its output is not ``(B, K)`` class scores.
        NonFiniteOutputError: the model returned NaN/inf for some images, named by ``indices[i]``
            (default: their positions in ``x``); such an output is never read as a prediction.
    """
    model = check_model(model)
    batch_size = positive_int("batch_size", batch_size)
    training = sorted({type(m).__name__ for m in model.modules() if m.training})
    if training:
        raise InvalidInputError(f"the model is in training mode ({', '.join(training[:4])}"
                                f"{', ...' if len(training) > 4 else ''}): BatchNorm and dropout would make its "
                                "predictions depend on the batch and change the model; call model.eval() first")
    indices = list(range(len(x))) if indices is None else list(indices)
    out = []
    for i in range(0, len(x), batch_size):
        batch = x[i:i + batch_size]
        scores = check_scores(model(batch.to(device)), len(batch), what=what)
        check_finite_outputs(scores, what, indices[i:i + batch_size])
        out.append(scores.argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


# -- chunk state -------------------------------------------------------------------------------
_RESTART = "delete the state folder (or give another --state-dir / --out) to start this run afresh"


def _redo(path: Path) -> str:
    """What to do about a damaged state file: a chunk's (or the full clean pass's) progress is redone on its own
    when that one file is deleted, keeping every other finished chunk; ``run.json`` has no such remedy."""
    if path.name == "run.json":
        return _RESTART
    return (f"delete {path} to redo only that part (every other finished chunk in {path.parent} is kept), or "
            f"{_RESTART}")


def _read_state(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """A state file of the harness, read and checked for ``keys``.

    Raises:
        robust_mix.validate.InvalidInputError: not JSON (truncated, edited) or not a state file, naming it.
    """
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{path} is not valid JSON ({err}), so its progress cannot be trusted; "
                                f"{_redo(path)}") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise InvalidInputError(f"{path} is not a state file of this robust_mix (missing {missing}); {_redo(path)}")
    return data


class ChunkState:
    """Progress of one chunk, saved as ``state_dir/chunk_<index>.json`` after every stage."""

    def __init__(self, index: int, start: int, end: int, digest: str, path: Optional[Path]) -> None:
        self.index, self.start, self.end, self.digest, self.path = index, start, end, digest, path
        self.clean: Optional[list[bool]] = None
        self.flags: dict[str, list[bool]] = {}
        self.stage_flags: dict[str, list[bool]] = {}
        self.stages_done: list[str] = []
        self.seconds = 0.0
        self.done = False
        self.resumed = False
        self.earlier_seconds = 0.0  # spent on this chunk by earlier sessions
        self.cpu_threads: list[int] = []  # CPU thread counts its passes ran with, every session

    @classmethod
    def open(cls, index: int, start: int, end: int, digest: str, state_dir: Optional[Path],
             suites: Optional[Mapping[str, Sequence[str]]] = None) -> "ChunkState":
        """The chunk's saved progress in ``state_dir`` (a fresh state when there is none); ``suites`` (the plan's
        suite -> stages) is what a finished stage must have left behind in the file.

        Raises:
            robust_mix.validate.InvalidInputError: the file is not JSON, lacks a field, or holds flags that are not
                one true/false per example or not those of every stage it marks as done (edited or corrupted).
        """
        path = None if state_dir is None else state_dir / f"chunk_{index:06d}.json"
        state = cls(index, start, end, digest, path)
        if path is not None and path.is_file():
            data = _read_state(path, ("start", "end", "digest", "clean", "flags", "stage_flags", "stages_done",
                                      "seconds", "done"))
            version = data.get("version", _STATE_VERSION)
            if isinstance(version, bool) or version != _STATE_VERSION:  # another layout: its fields may mean otherwise
                raise InvalidInputError(f"{path} is a chunk state of version {version!r}, not the version "
                                        f"{_STATE_VERSION} this robust_mix ({__version__}) writes and reads (a newer "
                                        "robust_mix wrote it, or it was edited): resume the run with the robust_mix "
                                        f"that started it, or {_RESTART}")
            if (data["start"], data["end"], data["digest"]) != (start, end, digest):
                raise ValueError(f"{path} belongs to other examples (different data or chunking); "
                                 "use a new --state-dir or the same arguments as the interrupted run")
            lists = {"clean": data["clean"], **{f"flags[{k!r}]": v for k, v in (data["flags"] or {}).items()},
                     **{f"stage_flags[{k!r}]": v for k, v in (data["stage_flags"] or {}).items()}}
            for key, flags in lists.items():
                if flags is not None and (not isinstance(flags, list) or len(flags) != end - start):
                    raise InvalidInputError(f"{path}: {key} must hold {end - start} flags, one per example of the "
                                            f"chunk, got {len(flags) if isinstance(flags, list) else flags!r}; "
                                            f"the file was edited or corrupted: {_redo(path)}")
                odd = next((f for f in flags or () if not isinstance(f, bool)), None)
                if odd is not None:
                    raise InvalidInputError(f"{path}: {key} must hold true/false flags, got {odd!r}; the file was "
                                            f"edited or corrupted: {_redo(path)}")
            _check_stages_recorded(path, data, suites or {})
            _check_bookkeeping(path, data)
            state.clean, state.flags = data["clean"], data["flags"]
            state.stage_flags, state.stages_done = data["stage_flags"], data["stages_done"]
            state.seconds, state.done, state.resumed = data["seconds"], data["done"], True
            state.earlier_seconds = state.seconds
            state.cpu_threads = list(data.get("cpu_threads", []))  # absent in older state files
        return state

    def note_threads(self, device: torch.device) -> None:
        """Record the CPU threads the pass that just ran used (on a CPU device; nothing on a GPU)."""
        if device.type == "cpu" and torch.get_num_threads() not in self.cpu_threads:
            self.cpu_threads = sorted({*self.cpu_threads, torch.get_num_threads()})

    def to_dict(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "chunk": self.index, "start": self.start, "end": self.end,
                "digest": self.digest, "clean": self.clean, "flags": self.flags,
                "stage_flags": self.stage_flags, "stages_done": self.stages_done,
                "seconds": self.seconds, "done": self.done, "cpu_threads": self.cpu_threads}

    def save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(self.to_dict()) + "\n")


def _check_stages_recorded(path: Path, data: dict[str, Any], suites: Mapping[str, Sequence[str]]) -> None:
    """Refuse a chunk file whose finished stages (``stages_done``, or all of them when ``done``) left no flags:
    they would be read as a missing key (``error: autoattack``) when the results are put together."""
    if not isinstance(data["stages_done"], list) or not isinstance(data["done"], bool):
        raise InvalidInputError(f"{path}: done must be true/false and stages_done a list of stages, got "
                                f"{data['done']!r} and {data['stages_done']!r}; the file was edited or corrupted: "
                                f"{_redo(path)}")
    done = data["stages_done"]
    expected = [st for stages in suites.values() for st in stages] if data["done"] else done
    missing = [f"stage {st!r}" for st in expected if st not in done or st not in (data["stage_flags"] or {})]
    missing += [f"suite {suite!r}" for suite, stages in suites.items()
                if any(st in expected for st in stages) and suite not in (data["flags"] or {})]
    if data["done"] or done:
        missing += ["clean"] * (data["clean"] is None)
    if missing:
        raise InvalidInputError(f"{path} marks work as done that it holds no flags for ({', '.join(missing)}); the "
                                f"file was edited or corrupted: {_redo(path)}")


def _check_bookkeeping(path: Path, data: dict[str, Any]) -> None:
    """Refuse a chunk file whose time or thread counts cannot be a run's: read as they were, ``"seconds": null``
    failed with a TypeError once the chunk went on, and a negative time or one of 1e300 s gave a report that cannot be
    read back (found only when the whole run had finished)."""
    seconds = data["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise InvalidInputError(f"{path}: seconds must be a finite number >= 0, got {seconds!r}; the file was edited "
                                f"or corrupted: {_redo(path)}")
    try:  # a time no run takes became the report's wall time, which its reader refuses at the end of the run
        check_wall_seconds(f"{path}: seconds", seconds)
    except InvalidInputError as err:
        raise InvalidInputError(f"{err}; the file was edited or corrupted: {_redo(path)}") from None
    threads = data.get("cpu_threads", [])  # absent in older state files
    if not isinstance(threads, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0
                                                for t in threads):
        raise InvalidInputError(f"{path}: cpu_threads must be a list of positive thread counts, got {threads!r}; the "
                                f"file was edited or corrupted: {_redo(path)}")


#: The path a run.json without ``fast_path`` (written before it was recorded) is resumed on: the default one.
_DEFAULT_FAST_PATH = {"channels_last": False, "compiled": False}
#: How each opt-in path of :func:`robust_mix.fastpath.fast_path` is named in a refusal.
_FAST_PATH_NAMES = {"channels_last": "channels-last", "compiled": "torch.compile"}


def _as_current_record(saved: dict[str, Any]) -> dict[str, Any]:
    """A ``run.json`` record with what earlier robust_mix versions did not record filled in as those versions ran
    it, so that their state folders still resume: no ``fast_path`` is the default path (a folder written with
    ``--channels-last`` or ``--compile`` by such a version was not marked, and resumes only without them), and
    the adaptive stages' ``eot_iter`` and ``n_restarts``, when missing, were APGD-CE's (``attack_settings["apgd"]``)."""
    record = {**saved, "fast_path": saved.get("fast_path", _DEFAULT_FAST_PATH)}
    settings = saved.get("attack_settings")
    if isinstance(settings, dict) and isinstance(settings.get("adaptive"), dict) and isinstance(settings.get("apgd"),
                                                                                                dict):
        apgd = settings["apgd"]
        implied = {k: apgd[k] for k in ("n_restarts", "eot_iter") if k in apgd}
        record["attack_settings"] = {**settings, "adaptive": {**implied, **settings["adaptive"]}}
    return record


def _fast_path_change(saved: Any, current: dict[str, bool]) -> str:
    """Why a resume on another arithmetic path is refused, e.g. ``"the state was written without channels-last,
    this run runs with it; ..."``, ending in what to do."""
    saved = saved if isinstance(saved, dict) else {}
    changes = [f"the state was written {'with' if saved.get(key) else 'without'} {name}, this run runs "
               f"{'with' if current.get(key) else 'without'} it"
               for key, name in _FAST_PATH_NAMES.items() if bool(saved.get(key)) != bool(current.get(key))]
    return ("; ".join(changes) + ". Channels-last weights and torch.compile round differently in the last bits, "
            "so resuming would mix flags from two arithmetic paths: resume with the same choice as the state was "
            "written (with or without --channels-last / --compile; robust_mix.fastpath.channels_last / "
            "compile_model in Python)")


def _device_change(saved: Any, current: str) -> str:
    """Why a resume on another kind of device is refused, ending in what to do."""
    return (f"the state was written on {saved!r}, this run is on {current!r}. Another device rounds differently in "
            "the last bits, so resuming would mix flags from two arithmetic paths: resume on the device the state "
            f"was written on (device={saved!r}, --device {saved})")


def _check_run_file(state_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Refuse a state folder written with other arguments (or whose record of them, ``run.json``, is gone
    while progress is there); record the arguments of a new one."""
    path = state_dir / "run.json"
    # progress first, then run.json: a run writes run.json before any progress, so progress seen without it
    # was not written by a run of these arguments
    progress = sorted(p.name for pattern in ("chunk_*.json", "clean_first_*.json") for p in state_dir.glob(pattern))
    if path.is_file():
        saved = _read_state(path, ())
        saved = _as_current_record(saved) if isinstance(saved, dict) else saved
        if isinstance(saved, dict) and "device" not in saved:
            # written before the device was recorded: which one it ran on is unknown
            logger.warning("%s was written by a robust_mix that did not record the device; resuming it on %s assumes "
                           "it ran there (another device rounds differently in the last bits)", path,
                           fingerprint["device"])
            saved["device"] = fingerprint["device"]
        if isinstance(saved, dict) and "model_code" not in saved:
            # written before the model's classes and settings were recorded: only its tensors were compared
            logger.warning("%s was written by a robust_mix that did not record the model's classes and settings; "
                           "resuming it assumes it was made by this model (its tensors match)", path)
            saved["model_code"] = fingerprint["model_code"]
        if saved != fingerprint:
            saved = saved if isinstance(saved, dict) else {}
            diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
            if "fast_path" in diff:
                fix = f": {_fast_path_change(saved.get('fast_path'), fingerprint['fast_path'])}"
            elif diff == ["device"]:
                fix = f": {_device_change(saved.get('device'), fingerprint['device'])}"
            else:
                fix = "; restart with the same arguments to resume"
            raise ValueError(f"{state_dir} holds a run with different arguments (differs in {diff}){fix}, or give "
                             "another state folder (state_dir=..., --state-dir or another --out)")
        return
    if progress:
        raise ValueError(f"{state_dir} holds progress ({', '.join(progress[:3])}{', ...' if len(progress) > 3 else ''}) "
                         "but no run.json recording the arguments it was made with (deleted, or written by an older "
                         f"robust_mix), so it may come from another model, eps or attack; {_RESTART}")
    atomic_write_text(path, json.dumps(fingerprint, indent=2) + "\n")


# -- the evaluation ----------------------------------------------------------------------------
def _attack_chunk(state: ChunkState, x: torch.Tensor, y: torch.Tensor, plan: AttackPlan,
                  runner: StageRunner, model: nn.Module, *, seed: int, batch_size: int,
                  device: torch.device, progress: Optional[Progress]) -> None:
    """Run every missing stage of one chunk, saving after each."""
    started = time.perf_counter()

    def checkpoint() -> None:
        nonlocal started
        now = time.perf_counter()
        state.seconds += now - started
        started = now
        state.save()

    if state.clean is None:
        state.clean = (predict(model, x, batch_size, device, range(state.start, state.end)) == y).tolist()
        state.note_threads(device)
        checkpoint()
    _advance(progress, "clean", len(y))
    for suite, stages in plan.suites.items():
        flags = torch.tensor(state.flags.get(suite, state.clean), dtype=torch.bool)
        for stage in stages:
            if stage not in state.stages_done:
                idx = flags.nonzero().flatten()
                for start in range(0, len(idx), batch_size):
                    batch = idx[start:start + batch_size]
                    x_adv = runner.run(stage, x[batch].to(device), y[batch].to(device), seed,
                                       examples=(state.start + batch).tolist())
                    state.note_threads(device)  # the harness may rebalance threads between batches
                    # the attacks work in float32; the model reads its own dtype, as the clean images have it
                    fooled = predict(model, x_adv.to(x.dtype), batch_size, device, (state.start + batch).tolist(),
                                     what=f"the model, on the {stage} adversarial examples,") != y[batch]
                    flags[batch[fooled]] = False
                state.flags[suite] = flags.tolist()
                state.stage_flags[stage] = flags.tolist()
                state.stages_done.append(stage)
                checkpoint()
                logger.debug("chunk %d: %s leaves %d/%d robust", state.index, stage, int(flags.sum()), len(y))
            _advance(progress, stage, len(y))
    state.done = True
    checkpoint()


def _advance(progress: Optional[Progress], stage: str, n: int) -> None:
    if progress is not None:
        progress.advance(stage, n)


def _full_clean(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device,
                state_path: Optional[Path]) -> int:
    """Correctly classified images among ``x`` (forward passes; sharded over the ranks), saved in
    ``state_path/clean_first_<N>.json`` so that a resumed run reads it back."""
    path = None if state_path is None else state_path / f"clean_first_{len(y)}.json"
    digest = _data_digest(x, y)
    if path is not None and path.is_file():
        saved = _read_state(path, ("n", "digest", "correct"))
        if (saved["n"], saved["digest"]) != (len(y), digest):
            raise ValueError(f"{path} belongs to other images (different data); use a new --state-dir or the "
                             "same arguments as the interrupted run")
        correct = saved["correct"]
        if isinstance(correct, bool) or not isinstance(correct, int) or not 0 <= correct <= len(y):
            raise InvalidInputError(f"{path}: correct must be a count of the {len(y)} images, got {correct!r}; the "
                                    f"file was edited or corrupted: {_redo(path)}")
        return int(saved["correct"])
    rank, world = _dist()
    lo, hi = rank * len(y) // world, (rank + 1) * len(y) // world
    correct = int((predict(model, x[lo:hi], batch_size, device, range(lo, hi)) == y[lo:hi]).sum())
    if world > 1:
        import torch.distributed as dist

        parts: list[Optional[int]] = [None] * world
        dist.all_gather_object(parts, correct)
        correct = sum(parts)
    if path is not None and rank == 0:
        atomic_write_text(path, json.dumps({"n": len(y), "digest": digest, "correct": correct}) + "\n")
    return correct


def _rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose random state :func:`torch.random.fork_rng` keeps for work on ``device`` (the CPU's
    is always kept): the caller's random numbers after :func:`benchmark` are those it would have drawn without it
    (pyautoattack's attacks call ``torch.manual_seed`` with their seed)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@evaluates_model  # in eval mode; afterwards every module is back in the mode the caller had it in
def benchmark(model: nn.Module, dataset: Optional[str] = None, threat_model: Optional[str] = None,
              eps: Optional[float] = None, n_examples: Optional[int] = None, batch_size: int = 500,
              attack: Union[str, Sequence[str]] = "standard", seed: int = 0,
              device: Union[str, torch.device, None] = None,
              state_dir: Union[str, Path, None] = None, data_dir: Union[str, Path, None] = None, *,
              adaptive: bool = False, chunk_size: Optional[int] = None,
              options: Optional[AttackOptions] = None, images: Optional[torch.Tensor] = None,
              labels: Optional[torch.Tensor] = None, preprocessing: Optional[str] = None,
              progress: Optional[Progress] = None, clean_examples: Optional[int] = None) -> BenchmarkResult:
    """Evaluate ``model`` with the leaderboard's AutoAttack protocol (and adaptive attacks).

    Args:
        model: raw ``[0, 1]`` images ``(B, C, H, W)`` -> logits or log-probabilities ``(B, K)``;
            a :class:`robust_mix.MixedClassifier` supplies defaults from ``model.config``. It is evaluated in eval
            mode, then each module is left in the mode it was in.
        dataset: ``"cifar10"``, ``"cifar100"``, ``"imagenet"``, ``"fashion-mnist"`` (default:
            the model's config); RobustBench's ``BenchmarkDataset`` members are read as their value.
        threat_model: ``"Linf"``, ``"L2"`` or ``"L1"`` (default: the config's, else ``"Linf"``);
            RobustBench's ``ThreatModel`` members are read as their value.
        eps: perturbation budget (default: the config's, when ``threat_model`` is the config's).
        n_examples: the first ``n_examples`` test images (default: the leaderboard's count), at most
            as many as ``images`` holds.
        batch_size: attack batch size.
        attack: ``"standard"``, ``"rand"``, ``"adaptive"`` or a list of stages
            (see :func:`robust_mix.protocol.resolve_attack`).
        seed: base seed; chunk ``i`` is attacked with ``chunk_seed(seed, i)``.
        device: default ``cuda:<LOCAL_RANK>`` when available, else CPU; one that does not exist here
            (``"cuda"`` without a visible GPU, ``"cuda:7"`` on a machine with fewer) is refused.
        state_dir: folder for resumable progress (nothing is saved when ``None``).
        data_dir: data set root (torchvision layout; an ImageNet folder with ``val/``).
        adaptive: add the adaptive suite to the attack.
        chunk_size: examples per unit of work (default ``batch_size``). Part of the result's
            identity: resuming needs the same value.
        options: budget overrides (tests only; the default is the leaderboard's).
        images, labels: evaluate these tensors instead of loading ``dataset`` (the report records ``images_given``:
            such a run is partial, never a leaderboard claim, whatever the images).
        preprocessing: ImageNet preprocessing name (see :data:`robust_mix.data.IMAGENET_PREPROCESSINGS`; default:
            the model config's, as RobustBench's zoo entry states it, else ``Res256Crop224``: the rule of
            :func:`robust_mix.data.preprocessing_for`); ImageNet only.
        progress: receives per-stage progress events.
        clean_examples: also measure clean accuracy (forward passes only) on the first
            ``clean_examples`` images (at least ``n_examples``; e.g. the whole test set), recorded as
            ``full_clean_accuracy``: cheap, and far less noisy than clean accuracy on the attacked subset.

    Raises:
        robust_mix.validate.InvalidInputError: a count, eps, threat model, device, label or image (shape,
            dtype, values in ``[0, 1]``) is invalid, or ``state_dir`` cannot be written; before any work starts.
        robust_mix.validate.NonFiniteOutputError: the model returned NaN/inf for some examples
            (named): they are never counted as predictions.
    """
    wall_start = time.perf_counter()
    model = check_model(model)
    config = getattr(model, "config", None)
    # the model's name in logs and the report, overrides included ("fmnist-robust,alpha=0.9", also after
    # model.alpha = 0.9): never the entry's bare name for another configuration of it
    current = model.current_config() if hasattr(model, "current_config") else None
    labelled = current if isinstance(current, ModelConfig) else config
    name = model_label(labelled) if isinstance(labelled, ModelConfig) else getattr(config, "name", None)
    name = name or type(model).__name__
    dataset = dataset or (config.dataset if config is not None and config.dataset != "custom" else None)
    # one spelling ("fmnist", "FashionMNIST" -> "fashion-mnist"): the report's data set decides the leaderboard size,
    # the model-info data set and whether the entry's reported numbers are for this run
    dataset = None if dataset is None else canonical_dataset(check_dataset(dataset))
    threat_model = check_threat_model(threat_model or (config.threat_model if config is not None else "Linf"))
    if eps is None and config is not None and config.eps is not None and threat_model != config.threat_model:
        raise InvalidInputError(f"eps is not set for threat_model={threat_model!r}: the model's config has "
                                f"eps={config.eps:g} for its own threat model {config.threat_model!r}, which is no "
                                f"{threat_model} budget; pass eps= (--eps) for {threat_model}")
    eps = eps if eps is not None else (config.eps if config is not None else None)
    if eps is None:
        raise ValueError("eps is not set: pass eps=8/255 (or --eps) or use a model whose config has one")
    eps = check_eps(eps, threat_model)
    n_examples = optional_positive_int("n_examples", n_examples)
    clean_examples = optional_positive_int("clean_examples", clean_examples)
    batch_size = positive_int("batch_size", batch_size)
    chunk_size = positive_int("chunk_size", chunk_size if chunk_size is not None else batch_size)
    seed = check_seed("seed", seed)
    plan = resolve_attack(attack, check_bool("adaptive", adaptive))
    options = check_options(options)
    progress = check_callback("progress", progress, ("start", "advance"), "robust_mix.benchmark.Progress")
    state_path = check_writable_dir(state_dir, "state folder") if state_dir is not None else None
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    images_given = images is not None
    if images is None:
        if labels is not None:
            raise ValueError("labels were given without images: pass images=<(N, C, H, W) tensor> with them, or "
                             "neither (the data set's test images are loaded)")
        if dataset is None:
            raise ValueError("no data set: pass dataset='cifar10' (--dataset cifar10) or images and labels")
        from robust_mix import data

        preprocessing = data.preprocessing_for(dataset, preprocessing, config)
        n_examples = n_examples or required_examples(dataset)
        try:
            images, labels = data.load_dataset(dataset, "test", max(n_examples or 0, clean_examples or 0) or None,
                                               data_dir, preprocessing=preprocessing)
        except data.NotEnoughExamplesError as err:
            if clean_examples is None or clean_examples <= n_examples:
                raise
            # the count that asked for the images is clean_examples: name it, not n_examples
            raise InvalidInputError(f"clean_examples is {clean_examples}, but {dataset}'s test split has "
                                    f"{err.available} images; pass clean_examples <= {err.available} "
                                    "(--clean-examples), or none") from None
        if dtype is not None and images.dtype != dtype:  # the loaded float32 images, in the model's precision
            logger.info("test images converted from %s to the model's %s", images.dtype, dtype)
            images = images.to(dtype)
    elif labels is None:
        raise ValueError("images were given without labels: pass labels=<(N,) class indices>, one per image")
    elif preprocessing is not None:  # it would be recorded in the report and never applied
        raise InvalidInputError(f"preprocessing={preprocessing!r} prepares the test images robust_mix loads, but "
                                "images were given: prepare them yourself and leave preprocessing out (or pass "
                                "dataset= without images to have them loaded and prepared)")
    dataset = dataset or "custom"
    images, labels = check_model_examples(model, images, labels)
    images, labels = images.cpu(), labels.cpu()
    check_eps_within_images(eps, threat_model, images.shape[1:])  # an L2 budget of 128 meant 128/255
    if n_examples is not None and n_examples > len(images):
        raise InvalidInputError(f"n_examples is {n_examples}, but only {len(images)} images were given; pass "
                                f"n_examples <= {len(images)} (or none: all of them)")
    full_images, full_labels = images, labels
    images, labels = images[:n_examples], labels[:n_examples]
    n = len(labels)
    if clean_examples is not None and clean_examples < n:
        raise ValueError(f"clean_examples is {clean_examples}, fewer than the {n} attacked examples: clean "
                         f"accuracy is measured on the attacked images and more; pass clean_examples >= {n} "
                         "(or none)")
    if clean_examples is not None and clean_examples > len(full_labels):
        raise ValueError(f"clean_examples is {clean_examples}, but only {len(full_labels)} images are available; "
                         f"pass clean_examples <= {len(full_labels)} (or none)")
    rank, world = _dist()
    device = check_device(device) if device is not None else default_device()
    model = model.to(device).eval()
    probe_scores = _check_output_contract(model, images, labels, device, model_num_classes(model))
    num_classes = probe_scores.shape[1]
    again = _check_input_untouched(model, images[:len(probe_scores)], device)
    randomized = _warn_if_randomized(probe_scores, again, plan.version, name)
    unused = sorted(set(options.overrides()) - set(options.overrides(plan.stages)))
    if unused:
        logger.warning("%s set%s the budget of no stage of this attack (%s): ignored", ", ".join(unused),
                       "" if len(unused) > 1 else "s", ", ".join(plan.stages))
    if "adaptive" in plan.suites and not getattr(model, "is_adaptive", False) and not is_mixednuts(model):
        logger.warning("the adaptive attack targets an adaptive mixing ratio (its BCE(gamma) term) and MixedNUTS "
                       "maps; %s has neither (a fixed ratio or a plain classifier), so its adaptive stages are "
                       "APGD-CE and targeted APGD-DLR once more, not an attack on a ratio", name)

    runner = StageRunner(model, plan, norm=threat_model, eps=eps, device=device, options=options)
    runner.check_classes(plan.stages, num_classes)
    runner.check_iterations(plan.stages)
    overrides = runner.budget_changes(plan.stages)
    same = sorted(set(options.overrides(plan.stages)) - set(overrides))
    if same:
        logger.info("%s equal%s the protocol's own budget for this attack: not an override", ", ".join(same),
                    "" if len(same) > 1 else "s")
    if overrides:
        logger.warning("attack budgets overridden (%s): this result is not leaderboard-grade", overrides)
    settings = runner.attack_settings()
    fingerprint = {"model": model_fingerprint(model), "model_code": model_code_fingerprint(model),
                   "dataset": dataset, "threat_model": threat_model,
                   "eps": eps, "n_examples": n, "attack_version": plan.version, "suites": plan.suites,
                   "seed": seed, "batch_size": batch_size, "chunk_size": chunk_size,
                   "attack_settings": settings, "fast_path": fast_path(model),
                   "device": device.type}
    # one run per state folder: a second process on it is refused (its ranks share the first one's lock)
    lock = FolderLock(state_path, "state folder") if state_path is not None and rank == 0 else None
    with lock or contextlib.nullcontext():
        if state_path is not None:
            _check_run_file(state_path, fingerprint)

        chunks = [(i, start, min(start + chunk_size, n)) for i, start in enumerate(range(0, n, chunk_size))]
        mine = [c for c in chunks if c[0] % world == rank]
        share = sum(end - start for _, start, end in mine)
        if progress is not None:
            progress.start([FULL_CLEAN_STAGE] * (clean_examples is not None) + ["clean", *plan.stages], share)
        full_correct = None
        if clean_examples is not None:
            full_correct = _full_clean(model, full_images[:clean_examples], full_labels[:clean_examples], batch_size,
                                       device, state_path)
            _advance(progress, FULL_CLEAN_STAGE, share)
        del full_images, full_labels
        results: dict[int, dict[str, Any]] = {}
        resumed, earlier = 0, 0.0
        for index, start, end in mine:
            x, y = images[start:end], labels[start:end]
            state = ChunkState.open(index, start, end, _data_digest(x, y), state_path, plan.suites)
            resumed += state.resumed
            earlier += state.earlier_seconds
            if not state.done:
                with torch.random.fork_rng(devices=_rng_devices(device)):  # the attacks reseed torch's global RNG
                    _attack_chunk(state, x, y, plan, runner, model, seed=chunk_seed(seed, index),
                                  batch_size=batch_size, device=device, progress=progress)
            else:
                for stage in ("clean", *plan.stages):
                    _advance(progress, stage, end - start)
            results[index] = state.to_dict()
        if world > 1:
            import torch.distributed as dist

            gathered: list[Optional[dict[int, dict[str, Any]]]] = [None] * world
            dist.all_gather_object(gathered, {"chunks": results, "resumed": resumed, "earlier": earlier})
            results = {k: v for part in gathered for k, v in part["chunks"].items()}
            resumed = sum(part["resumed"] for part in gathered)
            earlier = max(part["earlier"] for part in gathered)  # the ranks' earlier sessions ran side by side

    ordered = [results[i] for i, _, _ in chunks]
    clean = [f for c in ordered for f in c["clean"]]
    suite_flags = {s: [f for c in ordered for f in c["flags"][s]] for s in plan.suites}
    stage_flags = {st: [f for c in ordered for f in c["stage_flags"][st]] for st in plan.stages}
    robust = [all(flags) for flags in zip(clean, *suite_flags.values())]
    cpu_threads = sorted({t for c in ordered for t in c["cpu_threads"]})
    wall = max(time.perf_counter() - wall_start, 1e-9) + earlier  # > 0: examples_per_second stays finite
    result = BenchmarkResult(
        model=name, dataset=dataset, threat_model=threat_model, eps=float(eps), n_examples=n,
        attack=plan.name, seed=seed, clean_accuracy=_mean(clean), robust_accuracy=_mean(robust),
        suite_accuracy={s: _mean(f) for s, f in suite_flags.items()},
        stage_accuracy={st: _mean(f) for st, f in stage_flags.items()},
        clean_flags=clean, robust_flags=robust, suite_flags=suite_flags, wall_time_s=wall,
        examples_per_second=n / wall,
        number_forward_passes=number_forward_passes(model), attack_settings=settings,
        options=overrides, versions=package_versions(), world_size=world, chunk_size=chunk_size,
        resumed_chunks=resumed, resumed_seconds=earlier,
        config_fingerprint=current.fingerprint() if current is not None else None,
        full_clean_accuracy=None if full_correct is None else full_correct / clean_examples,
        full_clean_examples=clean_examples, cpu_threads=cpu_threads, images_given=images_given,
        randomized=randomized,
        arguments={"model": name, "dataset": dataset, "threat_model": threat_model, "eps": eps,
                   "n_examples": n, "batch_size": batch_size, "attack": attack if isinstance(attack, str)
                   else list(attack), "adaptive": adaptive, "seed": seed, "device": str(device),
                   "state_dir": None if state_dir is None else str(state_dir),
                   "data_dir": None if data_dir is None else str(data_dir), "chunk_size": chunk_size,
                   "preprocessing": preprocessing, "options": dataclasses.asdict(options),
                   "clean_examples": clean_examples, "fast_path": fingerprint["fast_path"]})
    logger.info("%s on %s (%d examples, %s): clean %.2f%%, robust %.2f%% in %.1f s", name, dataset, n,
                plan.name, 100 * result.clean_accuracy, 100 * result.robust_accuracy, wall)
    return result


@torch.no_grad()
def _check_output_contract(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                           declared: Optional[int] = None) -> torch.Tensor:
    """One forward pass on the first images, before any work: the model returns ``(B, K)`` logits or
    log-probabilities (not a tuple, not probabilities) with ``K`` above every label and equal to the class count
    the model ``declared`` (``num_classes``, its config's), if any. Returns those scores.

    Raises:
        robust_mix.validate.InvalidInputError: naming what the model returned and what to change, or the error it
            raised on the images (e.g. a convolution expecting 3 channels given 1-channel Fashion-MNIST).
    """
    probe = images[:2]
    try:
        outputs = model(probe.to(device, copy=True))  # a copy: a model that writes into its input is named below
    except (InvalidInputError, NonFiniteOutputError):  # robust_mix's own checks say what is wrong already
        raise
    except (RuntimeError, ValueError, TypeError) as err:  # a layer refusing the input's shape or dtype
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise InvalidInputError(f"the model fails on the images given to it, of shape {tuple(probe.shape[1:])} "
                                f"({probe.dtype}): {type(err).__name__}: {first_line}; "
                                "check the data set (dataset=, --dataset) against the input the model was built "
                                f"for{layout_hint(probe.shape)}") from err
    scores = check_scores(outputs, len(probe), labels)
    check_bases = getattr(model, "check_base_outputs", None)  # a mixture: its bases must return logits too
    if callable(check_bases):
        check_bases(probe.to(device))
    if declared is not None and scores.shape[1] != declared:
        count = scores.shape[1]
        raise InvalidInputError(f"the model declares {declared} classes (num_classes), but returns scores for "
                                f"{count}: the labels were checked against {declared} and the attacks would aim at "
                                f"{count}; fix the model's num_classes or its classifier head so that they agree")
    return scores


#: Largest change of the L2-normalised scores between two passes on the same images that is read as rounding, not
#: randomness (pyautoattack's ``check_randomized`` uses the same threshold); scores of a coarser dtype get
#: ``_RANDOMIZED_ULPS`` of their rounding (float16, bfloat16 on a GPU's nondeterministic kernels).
_RANDOMIZED_TOLERANCE = 1e-4
_RANDOMIZED_ULPS = 8


def _check_input_untouched(model: nn.Module, probe: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A second pass over the ``probe`` images, as the gradient attacks make it (the input a leaf that requires a
    gradient); returns its scores, detached.

    A model that writes into its input (``x.sub_(mean)``, ``x.clamp_(0, 1)``, ``nn.ReLU(inplace=True)`` first)
    changed the harness's own images (clean and adversarial) under the gradient-free passes, so the numbers were not
    those of the images given, and stopped every gradient attack with autograd's "a leaf Variable that requires grad
    is being used in an in-place operation".

    Raises:
        robust_mix.validate.InvalidInputError: the model modifies its input in place.
    """
    x = probe.to(device, copy=True).requires_grad_(True)
    fix = ("forward must leave its input as it is: work on a copy (x = x.clone()) or use out-of-place operations "
           "(x = x - mean, x.clamp(0, 1), nn.ReLU(inplace=False))")
    try:
        with torch.enable_grad():
            scores = model(x)
    except RuntimeError as err:
        if "in-place operation" not in str(err):
            raise
        raise InvalidInputError(f"the model modifies its input images in place, which the attacks' gradients "
                                f"cannot go through ({str(err).splitlines()[0]}); {fix}") from err
    change = (x.detach() - probe.to(device)).abs().max().item()
    if change != 0 or not torch.equal(x.detach(), probe.to(device)):  # equal: NaN written in counts too
        raise InvalidInputError(f"the model modifies its input images in place (a forward pass changed them by up to "
                                f"{change:.3g}), so the harness would score other images than those given; {fix}")
    return check_scores(scores.detach(), len(probe))


def _warn_if_randomized(scores: torch.Tensor, again: torch.Tensor, version: str, name: str) -> bool:
    """Whether a model gave other scores, ``again``, on a second pass over the images it gave ``scores`` for
    (test-time dropout, input noise, state that changes between calls); such a model is named in the log, and the
    result records it (``randomized``: its reports say that the numbers are one draw, and a deterministic attack's
    are partial). Deterministic AutoAttack overstates the robustness of a randomized model, and a resumed run
    cannot reproduce its flags. The harness skips pyautoattack's own checks, which warned about this."""
    change = (torch.nn.functional.normalize(scores.float(), dim=1)
              - torch.nn.functional.normalize(again.float(), dim=1)).norm(dim=1).max().item()
    coarse = torch.finfo(scores.dtype).eps if scores.is_floating_point() else 0.0
    if not change > max(_RANDOMIZED_TOLERANCE, _RANDOMIZED_ULPS * coarse):
        return False
    if version == "rand":
        logger.info("%s is randomized (its scores change by %.3g between two passes on the same images); the "
                    "rand version's EOT averages over it, and the report records that its numbers are one draw",
                    name, change)
        return True
    logger.warning("%s looks randomized: its scores on the same images changed by %.3g (L2, normalised) between "
                   "two passes (dropout at test time, input noise?). AutoAttack's %s version attacks one draw and "
                   "overstates the robustness of a randomized model, and a resumed run would not reproduce its "
                   "flags (the report marks it partial): evaluate it with attack='rand' (--attack rand: APGD-CE and "
                   "APGD-DLR with EOT), or make forward deterministic", name, change, version)
    return True


def _mean(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags)  # n >= 1: benchmark refuses empty evaluations
