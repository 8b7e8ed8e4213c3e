"""Safe file I/O: atomic writes and pickle-free weight loading."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

# mkstemp creates files readable by the owner only; finished files get the usual umask permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def figure_png(fig: Any) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (write them with :func:`atomic_write_bytes`)."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path,
                    metadata: Mapping[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically. Shared storage is copied, so any state dict works."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    atomic_write_bytes(path, save(tensors, metadata=dict(metadata or {})))


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load weights without unpickling arbitrary objects.

    ``.safetensors`` files are read directly; anything else goes through
    ``torch.load(weights_only=True)``. A ``{"state_dict": ...}`` wrapper and DataParallel
    ``module.`` prefixes are removed.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is corrupt, truncated, or needs unsafe unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a readable safetensors file ({err}); "
                             "it may be truncated or corrupt: download it again") from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"could not load {path} with torch.load(weights_only=True): {err}. If the file is a "
                "legacy checkpoint that needs full unpickling and you trust its source, convert it "
                "once to safetensors (torch.load(..., weights_only=False) then "
                "safetensors.torch.save_file) and point robust_mix at the converted file.") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return {_strip_prefix(k, "module."): v for k, v in state.items()}


def _strip_prefix(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key
