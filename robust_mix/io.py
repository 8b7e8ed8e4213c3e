"""Safe file I/O: atomic writes and pickle-free weight loading."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import pickle
import signal
import socket
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from robust_mix.validate import InvalidInputError, InvalidInputTypeError, check_input_file, check_path

logger = logging.getLogger(__name__)

#: How files written by ``torch.save`` begin: a zip archive (``PK\x03\x04``) or a pickle (protocol 2+).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")

# mkstemp creates files readable by the owner only; finished files get the usual umask permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new file, never half of one.

    Raises:
        IsADirectoryError: ``path`` is a folder (named, with what to do).
        OSError: the file cannot be written (a full disk, no permission: the ``OSError`` subclass of its errno),
            naming it, saying that the file there before is unchanged and what to do.
        robust_mix.validate.InvalidInputError: ``path`` is empty (``Path("")`` is the current folder).
        robust_mix.validate.InvalidInputTypeError: ``path`` is not a ``str`` or ``os.PathLike``.
    """
    path = check_path("the file to write", path, "a file path")
    if path is None:
        raise InvalidInputTypeError("the file to write must be a file path (str or pathlib.Path), got None")
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory, where a file is to be written: give the file's name "
                                f"(e.g. {str(path / 'report.json')!r}), or move the folder away", str(path))
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(err, path) from err
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_files(folder: str | Path, files: Mapping[str, bytes | str]) -> dict[str, Path]:
    """Write several files that belong together into ``folder`` (``{name: bytes or UTF-8 text}``): every file is
    written in full to a temporary file first, then all are moved into place at once, with Ctrl-C held back
    until the last one is in place. A failure or an interrupt while writing leaves every old file as it was;
    readers never see new files beside old ones of the same set.

    Returns:
        ``{name: path}`` of the files written.

    Raises:
        OSError: as :func:`atomic_write_bytes`'s, naming the file that could not be written.
    """
    folder = check_path("the folder to write", folder, "a folder path")
    if folder is None:
        raise InvalidInputTypeError("the folder to write must be a folder path (str or pathlib.Path), got None")
    staged: dict[Path, str] = {}
    path, replaced = folder, False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            path = folder / name
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "Is a directory, where a file is to be written: move the folder "
                                        "away", str(path))
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            staged[path] = tmp
            with os.fdopen(fd, "wb") as handle:
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)
        with _sigint_held():
            for path, tmp in list(staged.items()):
                os.replace(tmp, path)
                del staged[path]
                replaced = True
    except OSError as err:
        raise _write_error(err, path, len(files) > 1 and not replaced) from err
    finally:
        for tmp in staged.values():
            Path(tmp).unlink(missing_ok=True)
    return {name: folder / name for name in files}


def _write_error(err: OSError, path: Path, together: bool = False) -> OSError:
    """``err`` (a full disk, no permission, ...) of writing ``path``, saying which file, that the earlier one is
    whole (``together``: every file of the set) and what to do; an error that already says what to do (a folder
    where the file goes) is kept."""
    if isinstance(err, IsADirectoryError) and err.filename == str(path):
        return err
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some disk space (or write elsewhere)"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable (or write elsewhere)"
    else:
        fix = "fix the cause"
    kept = ("the files written there before, if any, are unchanged (none of the set was replaced)" if together
            else "the file written there before, if any, is unchanged")
    return OSError(err.errno, f"could not write {path} ({err.strerror or err}): {kept}; {fix}")


class LogFileHandler(logging.FileHandler):
    """A ``logging.FileHandler`` appending to its file (``train.log`` of a run folder) never through a link: a folder
    from someone else whose log file links to a file of this machine would have log lines appended to that file.

    Raises:
        robust_mix.validate.InvalidInputError: the file is a link, naming it and what to do (on creation).
    """

    def _open(self) -> Any:
        path = Path(self.baseFilename)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666 & ~_UMASK)
        except OSError:
            if path.is_symlink():
                raise InvalidInputError(f"{path} is a link (to {os.readlink(path)}); robust_mix appends its log there "
                                        "and never through a link, which would write into the file it points to. "
                                        "Remove the link (nothing else in the folder is lost), or use another "
                                        "folder") from None
            raise
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


#: The file in a state or run folder that :class:`FolderLock` locks (hidden; there while a run holds the lock).
LOCK_NAME = ".robust_mix.lock"


class FolderInUseError(ValueError):
    """Another process holds the folder's :class:`FolderLock`: two runs writing one folder would mix their files."""


class FolderLock:
    """An exclusive lock on a folder that a run writes its progress or results into, so that a second process
    started on the same folder is refused at once instead of mixing its files with the first one's.

    The lock is an OS lock (``flock``) on ``folder/.robust_mix.lock``, which the operating system releases when
    its process ends in any way (Ctrl-C, ``SIGKILL``, a crash): the file is removed on release, and one left
    behind by a killed process never blocks a later run.
    Where ``flock`` does not exist (Windows) or the file system refuses it, the folder is used unlocked, with a
    warning. Use as a context manager, or :meth:`acquire` and :meth:`release` (the lock is also released when
    the object is freed). It excludes other processes: within one process the lock is shared.
    """

    #: The locks this process holds, by lock file, with how many :class:`FolderLock` objects share each: a
    #: process that locks a folder it already holds (``--state-dir`` the same as ``--out``) shares it.
    _held: dict[str, list[int]] = {}

    def __init__(self, folder: str | Path, what: str = "folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None
        self._path = self.folder / LOCK_NAME

    def acquire(self) -> "FolderLock":
        """Take the lock.

        Raises:
            FolderInUseError: another process holds it (named by its pid and host), with what to do.
            OSError: the lock file cannot be created (a read-only or full folder), with the folder named.
            robust_mix.validate.InvalidInputError: the lock file is a link (to a file it would overwrite) or not a
                regular file; nothing was written.
        """
        if self._fd is not None:
            return self
        try:
            import fcntl
        except ImportError:  # no flock on this platform
            logger.warning("%s cannot be locked on this platform: do not start a second run on it while this one "
                           "runs", self.folder)
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        key = os.path.realpath(path)
        if key in FolderLock._held:  # held by this process already
            FolderLock._held[key][1] += 1
            self._path, self._fd = path, FolderLock._held[key][0]
            return self
        while True:
            try:  # never through a link: the file is truncated and written, and would be the link's target
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666 & ~_UMASK)
            except OSError as err:
                if path.is_symlink():  # ELOOP (EMLINK on some BSDs): a folder from someone else, linking elsewhere
                    raise InvalidInputError(
                        f"{path}, the lock file of the {self.what}, is a link (to {os.readlink(path)}); robust_mix "
                        "writes its lock file there and never through a link, which would overwrite the file it "
                        "points to. Remove the link (nothing else in the folder is lost), or give another folder"
                    ) from None
                raise OSError(err.errno, f"cannot create the lock file of the {self.what} ({err.strerror}): make "
                              "the folder writable, or give another one", str(path)) from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device named like it: not a lock file
                os.close(fd)
                raise InvalidInputError(f"{path}, the lock file of the {self.what}, is not a regular file: remove it, "
                                       "or give another folder")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "a process"
                os.close(fd)
                raise FolderInUseError(
                    f"{self.folder} ({self.what}) is in use by another running robust_mix run ({holder}): two "
                    "runs writing into one folder would mix their files. Wait for that run to end (then rerun this "
                    "command to resume it), or give this run another folder. The lock is released when its "
                    "process ends, even killed, so only a run that is still running holds it") from None
            except OSError as err:  # e.g. ENOLCK: a network file system without locks
                os.close(fd)
                logger.warning("%s cannot be locked (%s): do not start a second run on it while this one runs",
                               self.folder, err.strerror)
                return self
            try:  # the file locked must still be the folder's: a releasing holder removes it (then lock anew)
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._path, self._fd = path, fd
        FolderLock._held[key] = [fd, 1]
        return self

    def release(self) -> None:
        """Give the lock back and remove its file (a process killed before this leaves the file, unlocked)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            key = next((k for k, (held, _) in FolderLock._held.items() if held == fd), None)
            if key is not None:
                FolderLock._held[key][1] -= 1
                if FolderLock._held[key][1] > 0:  # still held by another object of this process
                    return
                del FolderLock._held[key]
            try:
                os.unlink(self._path)  # while locked: a process that opened it before sees it gone and retries
            except OSError as err:
                logger.debug("could not remove the lock file %s (%s)", self._path, err)
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the OS releases it anyway
            self.release()


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Within the block, Ctrl-C is remembered and raised when the block ends (on the main thread; elsewhere
    signals never arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib ``Figure`` (``kwargs``: ``figsize``, ``dpi``, ...) made without pyplot: drawing it needs no display
    and never touches the caller's pyplot state (their backend, e.g. a notebook's inline one, and their open figures
    stay as they were). Render it with :func:`figure_png`."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def figure_png(fig: Any) -> bytes:
    """Render a matplotlib figure (from :func:`new_figure`) to PNG bytes with the Agg renderer, whatever the caller's
    backend (write them with :func:`atomic_write_bytes`)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # the figure's own canvas: a headless renderer, pyplot's backend left alone
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def state_dict_bytes(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """Tensors as the bytes of a safetensors file (for :func:`atomic_write_files`). Shared storage is copied, so any
    state dict works."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    return save(tensors, metadata=dict(metadata or {}))


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path,
                    metadata: Mapping[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically (:func:`state_dict_bytes`)."""
    atomic_write_bytes(path, state_dict_bytes(state, metadata))


def sniff_weights_file(path: str | Path) -> bytes:
    """Refuse files that cannot be checkpoints, before any parser sees them; returns the file's first 512 bytes.

    An HTML page saved where a checkpoint should be (Google Drive answers a quota or virus-scan
    page instead of the file), a Git LFS pointer (a clone without Git LFS) and an empty file are named as such,
    with what to do.

    Raises:
        ValueError: the file is empty, an HTML/text page or a Git LFS pointer.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        raise ValueError(f"{path} is empty, not a checkpoint: delete it and download it again")
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        raise ValueError(f"{path} is a Git LFS pointer (a few lines naming the file), not the file itself: the "
                         "repository was cloned without Git LFS. Fetch the files (git lfs install && git lfs pull in "
                         "the clone), or load the Hub repo itself with 'hf-hub:org/name'")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text[:200]:
        raise ValueError(f"{path} is an HTML page, not a checkpoint (a download that returned a web page, e.g. "
                         "Google Drive's quota or virus-scan notice): delete it and download the file again, "
                         "or fetch it in a browser and put it at this path")
    return head


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load weights without unpickling arbitrary objects.

    ``.safetensors`` files are read directly; anything else goes through
    ``torch.load(weights_only=True)``. A ``{"state_dict": ...}`` wrapper and DataParallel
    ``module.`` prefixes are removed.

    Raises:
        FileNotFoundError: the file does not exist.
        robust_mix.validate.InvalidInputError: ``path`` is a folder.
        ValueError: the file is an HTML page, empty, truncated, corrupt, or holds pickled objects
            that only unsafe unpickling could load; the message names the file and what to do.
    """
    path = check_input_file(path, "weight file")
    head = sniff_weights_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        # a safetensors file is an 8-byte header length, then its JSON header ("{"): never read as torch's
        if head.startswith(_TORCH_MAGIC) and head[8:9] != b"{":
            raise ValueError(f"{path} is a torch.save file (a zip archive or pickle), not safetensors, and "
                             "robust_mix never unpickles a file offered as safetensors. Convert it once "
                             "(torch.load(..., weights_only=True), then safetensors.torch.save_file) or "
                             "give it its .pt name")

        try:
            state: Any = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a readable safetensors file ({err}); "
                             "it may be truncated or corrupt: download it again") from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{path} holds pickled Python objects, not only tensors, and robust_mix never unpickles "
                f"them (torch.load(weights_only=True) refused: {str(err).splitlines()[0]}). If you trust "
                "the file's source, convert it once to safetensors (torch.load(..., weights_only=False), "
                "then safetensors.torch.save_file) and point robust_mix at the converted file.") from err
        except Exception as err:  # zip errors of truncated files, EOF, other corruption
            raise ValueError(f"could not read {path} as a torch checkpoint ({type(err).__name__}: {err}); "
                             "it may be truncated or corrupt: download it again") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return {_strip_prefix(k, "module."): v for k, v in state.items()}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file, read in chunks (large checkpoints are fine)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _strip_prefix(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key
