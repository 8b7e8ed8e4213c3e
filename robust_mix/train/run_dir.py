"""A training run's folder: ``recipe.json``, the resumable checkpoint, ``history.jsonl`` and ``train.log``.

Rank 0 writes, holding the folder's lock (:class:`robust_mix.io.FolderLock`: a second run started on the folder
is refused), every write is atomic (:mod:`robust_mix.io`), and nothing is written before the
run is known to be able to start: :class:`RunDir` checks that the folder is writable (creating it,
empty) and refuses one that holds results of a different recipe when it is created, and writes
only when :meth:`RunDir.start` is called, after the models and data have been built. The per-epoch history lives inside the checkpoint and
``history.jsonl`` is rewritten from it, so the two never disagree after a kill.
"""
from __future__ import annotations

import io
import json
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from robust_mix.distributed import DistContext
from robust_mix.io import FolderLock, LogFileHandler, atomic_write_bytes, atomic_write_text
from robust_mix.train.config import RecipeConfig, recipe_dict, recipe_from_dict, save_recipe
from robust_mix.validate import check_writable_dir, parse_json

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
CHECKPOINT = "checkpoint.pt"
RECIPE = "recipe.json"
HISTORY = "history.jsonl"
LOG = "train.log"
#: What a run folder holds besides results: a folder with only these (and hidden files) holds no results yet.
BOOKKEEPING = (RECIPE, HISTORY, LOG, "history.png")
_RESTART = ("checkpoints are written atomically, so it was damaged or replaced after the run wrote it: restore it, "
            "or move it away to start the run over (the other files of the folder are kept)")


class RecipeMismatchError(ValueError):
    """The run folder holds results of a different recipe; nothing was written."""


class RunFileError(ValueError):
    """A file of the run folder (checkpoint, history) cannot be read; names the file and what to do."""


#: What every checkpoint written by :func:`robust_mix.train.loop.fit` holds.
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "best")


class RunDir:
    """A run folder bound to one recipe.

    Args:
        out: the folder (created, empty, if missing).
        config: the recipe of this run.
        dist: this process's place in the run; only rank 0 writes.
        outputs: files or folders whose presence means the folder holds results of its
            ``recipe.json`` (the checkpoint, weights, an adversarial buffer, ...); any other file
            besides :data:`BOOKKEEPING` counts too (another recipe's results, e.g. ``nuts.json``).
        free_prefixes: recipe fields a rerun may change without invalidating those results
            (e.g. ``calib_``: a finished run recalibrates).

    Raises:
        RecipeMismatchError: ``out`` holds results of a different recipe, or results without a readable
            ``recipe.json`` (which recipe made them cannot be told).
    """

    def __init__(self, out: PathLike, config: RecipeConfig, dist: DistContext = DistContext(),
                 outputs: Sequence[str] = (CHECKPOINT,), free_prefixes: Sequence[str] = ()) -> None:
        self.path = check_writable_dir(out, "run folder") if dist.is_main else Path(out).expanduser()
        # one run per folder: a second process started on it is refused before it reads or writes anything
        self._lock = FolderLock(self.path, "run folder").acquire() if dist.is_main else None
        self.config = config
        self.dist = dist
        self.free_prefixes = tuple(free_prefixes)
        self._handler: Optional[logging.Handler] = None
        #: True when the folder already holds results of exactly this recipe (free fields included): a finished
        #: step whose result file is there need not run again.
        self.same_recipe = False
        try:
            self._check_same_recipe(outputs)
        except BaseException:
            self.close()
            raise

    def _compared(self, recipe: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in recipe.items() if not k.startswith(self.free_prefixes)}

    def _check_same_recipe(self, outputs: Sequence[str]) -> None:
        saved = self.path / RECIPE
        # results: this recipe's outputs, and whatever else is there (another recipe's nuts.json, weights, ...)
        present = [name for name in outputs if (self.path / name).exists()]
        if self.path.is_dir():
            present += sorted(p.name for p in self.path.iterdir()
                              if p.name not in (*present, *BOOKKEEPING) and not p.name.startswith("."))
        if not present:
            return
        shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
        if not saved.is_file():
            raise RecipeMismatchError(f"{self.path} holds {shown} but no {RECIPE}, so which recipe made "
                                      f"them cannot be told; restore {RECIPE}, or use another --out folder "
                                      "(nothing was written)")
        try:
            data = parse_json(saved.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise RecipeMismatchError(f"{saved} is not valid JSON ({err}): it was damaged after the run wrote it; "
                                      "restore it, or use another --out folder (nothing was written)") from None
        try:
            previous = recipe_dict(recipe_from_dict(type(self.config), data))
        except (ValueError, TypeError) as err:
            raise RecipeMismatchError(f"{saved} holds a recipe that is not a {type(self.config).__name__} ({err}), "
                                      f"with its results ({shown}); use another --out folder "
                                      "(nothing was written)") from None
        current = recipe_dict(self.config)
        self.same_recipe = previous == current
        old, new = self._compared(previous), self._compared(current)
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
            raise RecipeMismatchError(
                f"{self.path} holds {shown} of a run with a different recipe ({detail}); "
                "rerun with the saved recipe to resume, or use another --out folder (nothing was written)")

    # -- writing (rank 0) ------------------------------------------------------------------
    def start(self) -> None:
        """Create the folder, save ``recipe.json`` and log to ``train.log`` (rank 0; no-op elsewhere)."""
        if not self.dist.is_main:
            return
        save_recipe(self.config, self.path / RECIPE)
        self._handler = LogFileHandler(self.path / LOG)  # never through a link: a run folder may come from elsewhere
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("robust_mix")
        root.addHandler(self._handler)
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically write the resumable state (tensors and plain containers only) and the history (rank 0)."""
        if not self.dist.is_main:
            return
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint, buffer.getvalue())
        self.write_history(state.get("history", []))

    def write_history(self, history: Sequence[dict[str, Any]]) -> None:
        """Atomically write ``history.jsonl``, one record per line (rank 0); a resumed run rewrites it from its
        checkpoint, so a damaged file is repaired by rerunning the training command."""
        if self.dist.is_main:
            atomic_write_text(self.path / HISTORY, "".join(json.dumps(record) + "\n" for record in history))

    def load_checkpoint(self) -> Optional[dict[str, Any]]:
        """The last checkpoint (every rank reads it), or ``None`` when the run starts fresh."""
        if not self.checkpoint.is_file():
            return None
        if not zipfile.is_zipfile(self.checkpoint):  # torch.save's format; a truncated file has no zip directory
            raise RunFileError(f"{self.checkpoint} is not a readable checkpoint (not a torch.save file, or cut "
                               f"short); {_RESTART}")
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise RunFileError(f"{self.checkpoint} holds objects other than tensors and plain containers, so it was "
                               "not written by a robust_mix run and is not loaded (it would have to be unpickled); "
                               f"{_RESTART}") from None
        except Exception as err:  # truncated, overwritten, not a torch file at all
            why = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise RunFileError(f"{self.checkpoint} is not a readable checkpoint ({why}); {_RESTART}") from None
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise RunFileError(f"{self.checkpoint} is not a training checkpoint (it lacks {missing}); {_RESTART}")
        return state

    def read_json(self, name: str, check: Optional[Callable[[dict[str, Any]], Any]] = None) -> dict[str, Any]:
        """A result file of the folder (``policy.json``, ``nuts.json``, ...) that :meth:`write_json` wrote, read back
        when a finished run is started again; ``check`` (e.g. :func:`robust_mix.config.checked_from_dict` of the
        config it holds) checks every field as the run wrote it, raising ``ValueError`` or ``TypeError``.

        Raises:
            RunFileError: the file is not JSON (:func:`robust_mix.validate.parse_json`), not a JSON object, or fails
                ``check``: it was damaged or replaced after the run wrote it; the message names it, the field and
                says what to do.
        """
        path = self.path / name
        redo = ("it was damaged or replaced after the run wrote it (results are written atomically): move it away "
                f"and rerun the command to compute it again")
        try:
            data = parse_json(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:  # json.JSONDecodeError is a ValueError
            raise RunFileError(f"{path} is not valid JSON ({err}); {redo}") from None
        if not isinstance(data, dict):
            raise RunFileError(f"{path} holds a JSON {type(data).__name__}, not the object the run writes; {redo}")
        if check is not None:
            try:
                check(data)
            except (TypeError, ValueError) as err:
                raise RunFileError(f"{path}: {err}; {redo}") from None
        return data

    def write_json(self, name: str, data: Any) -> None:
        """Write a result file (``policy.json``, ``calibration.json``, ...) atomically (rank 0)."""
        if self.dist.is_main:
            atomic_write_text(self.path / name, json.dumps(data, indent=2) + "\n")

    def close(self) -> None:
        """Stop logging to ``train.log`` and release the folder's lock."""
        if self._lock is not None:
            self._lock.release()
        if self._handler is not None:
            logging.getLogger("robust_mix").removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_history(path: PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of a run folder's ``history.jsonl`` (``[]`` when there is none)."""
    path = Path(path).expanduser()
    file = path / HISTORY if path.is_dir() else path
    if not file.is_file():
        return []
    records = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except json.JSONDecodeError as err:
            record, why = None, f"not JSON: {err}"
        else:
            why = "not a record with an integer 'epoch'"
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise RunFileError(f"{file}, line {number}, is {why}: the file was damaged or replaced after the run "
                               f"wrote it; the run's checkpoint holds the history too: rerun the training command "
                               f"to rewrite {HISTORY} from it")
        records.append(record)
    return records
