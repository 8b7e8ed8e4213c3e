"""Certifying a model on a data set: the runner behind ``robust-mix certify`` (a JSON report and a plot).

:mod:`robust_mix.certify` holds the certificates themselves (PAPER.md section 4); this module runs
them for several mixing ratios on a batch of images and writes ``certify.json`` and
``certify.png``. The CLI only parses arguments and prints the table.

>>> report = certify_model(model, images, labels, method="smoothing", sigma=0.12, alphas=[0.8, 0.9])
>>> write_certification("runs/certify", report)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from robust_mix.certify import (AlphaChoice, SmoothingProgress, certified_accuracy, check_lipschitz, check_norm,
                                check_probability_mixing, check_progress, estimate_smoothed, lipschitz_radius, margin,
                                resolve_alpha, robust_probs_lipschitz)
from robust_mix.formatting import format_alpha
from robust_mix.io import FolderLock, atomic_write_bytes, atomic_write_files, figure_png, new_figure
from robust_mix.mixing import MixedClassifier, mix_log_probs
from robust_mix.progress import show_bars
from robust_mix.validate import (InvalidInputError, check_alpha, check_bool, check_examples, check_finite_outputs,
                                 check_radii, check_seed, check_writable_dir, evaluates_model, positive_float, positive_int)
from robust_mix.version import __version__

logger = logging.getLogger(__name__)

METHODS = ("smoothing", "lipschitz")


@dataclass
class Certification:
    """A finished certification: the JSON report plus what the plot needs (kept out of the JSON).

    Attributes:
        report: ``certify.json``'s content (settings, one curve per ratio, per-example radii).
        radii: ``(N,)`` certified radius of every example, one tensor per curve.
        correct: ``(N,)`` whether the certified prediction is the label, one tensor per curve.
        title, xlabel: the plot's texts.
    """

    report: dict[str, Any]
    radii: list[torch.Tensor] = field(default_factory=list)
    correct: list[torch.Tensor] = field(default_factory=list)
    title: str = ""
    xlabel: str = ""


def alpha_label(choice: AlphaChoice) -> str:
    """How a ratio choice is named in tables and plots (a choice as :func:`ratio_choice` returns it)."""
    if isinstance(choice, torch.Tensor):
        return "alpha = given per example"
    if choice == 1.0:
        return "robust base (alpha = 1)"
    return f"alpha = {format_alpha(choice)}" if isinstance(choice, float) else f"alpha = {choice} (per example)"


def ratio_choice(choice: Any) -> AlphaChoice:
    """A ratio to certify as this module keeps it: ``"applied"``/``"lower"`` as they are, a ``(B,)`` tensor as it is
    (one ratio per example), any single number (an ``int``, a NumPy scalar, a one-element tensor) as a ``float``
    in ``[0, 1]``; ``alphas=[0]`` was labelled ``alpha = 0 (per example)`` and a tensor could not be written."""
    if isinstance(choice, str) or (isinstance(choice, torch.Tensor) and choice.numel() != 1):
        return choice
    return check_alpha(choice, "every alpha")


def check_method(method: str, lipschitz: Optional[float] = None, norm: str = "l2"
                 ) -> tuple[str, Optional[float], str]:
    """``(method, lipschitz, norm)`` of a certificate, checked together (:func:`certify_model` and the CLI, before
    loading a model): ``lipschitz`` and ``norm='linf'`` belong to ``method='lipschitz'``. With smoothing they were
    ignored, and the report said l2 and the smoothing bound whatever was asked for."""
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {list(METHODS)}, got {method!r}")
    norm = check_norm(norm)
    if method == "smoothing" and (lipschitz is not None or norm != "l2"):
        given = [f"{k}={v!r}" for k, v in (("lipschitz", lipschitz), ("norm", norm)) if v is not None and v != "l2"]
        several = len(given) > 1
        raise InvalidInputError(f"{' and '.join(given)} {'apply' if several else 'applies'} to method='lipschitz' "
                                "(--method lipschitz); randomized smoothing certifies l2 radii with its own estimate: "
                                f"leave {'them' if several else 'it'} out, or pass method='lipschitz'")
    return method, None if lipschitz is None else check_lipschitz(lipschitz), norm


@evaluates_model
def certify_model(model: MixedClassifier, images: torch.Tensor, labels: torch.Tensor, *, name: str = "model",
                  method: str = "smoothing", sigma: float = 0.25, n0: int = 100, n: int = 1000,
                  failure_prob: float = 0.001, lipschitz: Optional[float] = None, norm: str = "l2",
                  radii: Optional[Sequence[float]] = None, alphas: Optional[Sequence[AlphaChoice]] = None,
                  batch_size: int = 1000, seed: int = 0, progress: Optional[bool] = None,
                  about: Optional[dict[str, Any]] = None,
                  state_dir: Union[str, Path, None] = None) -> Certification:
    """Certified accuracy against radius of ``model`` on ``images`` ``(N, C, H, W)`` / ``labels`` ``(N,)``.

    Args:
        method: ``"smoothing"`` (randomized smoothing of the robust base, l2) or ``"lipschitz"``.
        sigma, n0, n, failure_prob, seed: the smoothing estimate (selection and estimation samples).
        lipschitz, norm: the Lipschitz form: a finite constant > 0, or ``None`` (the default) for the library's
            bound (Sequential robust bases).
        radii: where certified accuracy is reported, finite and >= 0, sorted in the report. Default: 0 to
            4 sigma in 8 steps for ``"smoothing"``; for ``"lipschitz"`` (whose radii, in ``norm``, have nothing to
            do with ``sigma``), 0 to the largest radius certified (over every ratio) in 8 steps.
        alphas: ratios to certify (numbers, ``"applied"``, ``"lower"``, ``(N,)`` tensors of per-example ratios;
            default the model's own); 1.0, the robust base alone, is always added. Per-example radii are written
            under ``radius@<alpha>`` (``radius@given``, ``radius@given#2``... for tensors).
        progress: tqdm bars over the smoothing samples: ``True`` draws them, ``False`` does not, ``None`` (the
            default) draws them only when the standard error is a terminal (none into a log file); never while
            ``$TQDM_DISABLE`` is set (:func:`robust_mix.progress.show_bars`).
        about: extra fields for the report (data set, split, overrides); ``dataset`` defaults to the model config's
            (``"custom"`` for a model built without one), as every ``certify.json`` names one.
        state_dir: a folder where the smoothing samples drawn so far are saved (atomically, after each group
            of examples); a rerun with the same model, images and settings resumes there and gives the same
            report as an uninterrupted run. ``None``: nothing is saved.

    Raises:
        ValueError: a model the certificates do not cover, images off its input contract, bad labels, no images,
            a ``batch_size`` below 1, a ``lipschitz`` that is 0, negative, NaN or infinite (``None``, not 0, asks for the library's bound),
            ``lipschitz`` or ``norm='linf'`` with ``method='smoothing'`` (they belong to the Lipschitz form),
            or a ``state_dir`` holding the samples of another model, other images or other settings.
    """
    method, lipschitz, norm = check_method(method, lipschitz, norm)
    if progress is not None:
        progress = check_bool("progress", progress)
    sigma = positive_float("sigma", sigma)
    seed = check_seed("seed", seed)
    if radii is not None:
        radii = check_radii(radii)
    elif method == "smoothing":
        radii = [sigma * i / 2 for i in range(9)]
    start = time.time()
    check_probability_mixing(model)
    device = next(model.parameters()).device
    images, labels = check_examples(images, labels, model.input_shape, model.num_classes, dtype=model.dtype)
    images, labels = images.to(device), labels.to(device)
    batch_size = positive_int("batch_size", batch_size)
    default: AlphaChoice = "applied" if model.is_adaptive else float(model.alpha)
    choices = list(dict.fromkeys([*(ratio_choice(a) for a in (alphas or [default])), 1.0]))
    with torch.no_grad():
        logits = [model.base_logits(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    std_logits = torch.cat([g for g, _ in logits])
    rob_logits = torch.cat([h for _, h in logits])

    settings: dict[str, Any] = {"method": method}
    if method == "smoothing":
        best = failure_prob ** (1 / n)  # the Clopper-Pearson lower bound when all n samples agree
        if best <= 0.5:
            needed = math.floor(math.log(failure_prob) / math.log(0.5)) + 1
            logger.warning("with n = %d samples and failure_prob = %g, the lower bound on the top class's probability "
                           "is at most %.3g <= 1/2: no example can be certified at any ratio (every one abstains); "
                           "use n >= %d", n, failure_prob, best, needed)
        state_path = None if state_dir is None else check_writable_dir(state_dir, "state folder")
        # one run per state folder: a second process sampling into it is refused
        with FolderLock(state_path, "state folder") if state_path is not None else contextlib.nullcontext():
            state = None if state_path is None else _SamplingState(
                state_path, model, images,
                dict(sigma=sigma, n0=n0, n=n, batch_size=batch_size, seed=seed, num_classes=rob_logits.shape[1]))
            estimate = estimate_smoothed(lambda z: model.robust(model.robust_input(z)), images, sigma=sigma,
                                         num_classes=rob_logits.shape[1], n0=n0, n=n, failure_prob=failure_prob,
                                         batch_size=batch_size, generator=torch.Generator().manual_seed(seed),
                                         progress=show_bars(progress is not False, sys.stderr,
                                                            terminal_only=progress is None),
                                         resume=state.load() if state else None,
                                         on_progress=state.save if state else None)
        settings.update(norm="l2", sigma=sigma, n0=n0, n=n, failure_prob=failure_prob, seed=seed)
        certify = lambda a: (estimate.prediction(a), estimate.radius(a))  # noqa: E731
        examples = {"top_class": estimate.top_class.tolist(), "top_count": estimate.top_count.tolist(),
                    "p_lower": estimate.p_lower.tolist()}
        xlabel, title = "l2 radius", f"{name}: smoothing sigma = {sigma:g}, n = {n}"
    else:
        if lipschitz is None:
            lipschitz = robust_probs_lipschitz(model, images.shape[1:], norm)
        check_finite_outputs(rob_logits, "the robust base", range(len(images)))
        probs = F.softmax(rob_logits.double() * model.rob_scale, dim=1)  # float64, as robust_probabilities
        settings.update(norm=norm, lipschitz=lipschitz)

        def certify(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            radius = lipschitz_radius(probs, None, a, lipschitz)
            top = probs.argmax(dim=1)
            return torch.where(radius > 0, top, torch.full_like(top, -1)), radius
        examples = {"robust_margin": margin(probs).tolist()}
        xlabel, title = f"{norm} radius", f"{name}: Lipschitz bound L = {lipschitz:.3g}"

    result = Certification(report={}, title=title, xlabel=xlabel)
    certified_by = [(choice, resolve_alpha(model, images, choice)) for choice in choices]
    certified_by = [(choice, a, *certify(a)) for choice, a in certified_by]
    if radii is None:  # Lipschitz radii (l2 or linf, often far below sigma): a grid over the radii found
        radii = default_radii(torch.cat([radius for *_, radius in certified_by]))
    curves = []
    given = 0  # per-example ratios are numbered from the second on: one key or label each, none overwritten
    for choice, a, prediction, radius in certified_by:
        ok = prediction == labels
        certified = radius > 0
        key, label = choice, alpha_label(choice)
        if isinstance(choice, torch.Tensor):
            given += 1
            key, label = ("given", label) if given == 1 else (f"given#{given}", f"{label} #{given}")
        curves.append({
            "alpha": choice.tolist() if isinstance(choice, torch.Tensor) else choice, "label": label,
            "alpha_mean": a.mean().item(),
            "certified_accuracy": [round(v, 6) for v in certified_accuracy(radius, ok, radii).tolist()],
            "abstain_rate": (~certified).double().mean().item(),
            "median_radius_certified_correct": (radius[certified & ok].median().item()
                                                if (certified & ok).any() else 0.0),
            "mixed_clean_accuracy": _clean_accuracy(model, std_logits, rob_logits, a, labels),
        })
        examples[f"radius@{key}"] = [round(v, 6) for v in radius.tolist()]
        result.radii.append(radius.cpu())
        result.correct.append(ok.cpu())
    # the data set every certify.json names (its reader, the leaderboard, requires it): the caller's, else the config's
    dataset = model.config.dataset if model.config is not None else "custom"
    result.report = {"model": name, "dataset": dataset, **(about or {}), "n_examples": len(labels), **settings,
                     "radii": radii, "curves": curves, "examples": {"labels": labels.tolist(), **examples},
                     "seconds": round(time.time() - start, 2), "robust_mix_version": __version__}
    return result


def _whole(text: Any) -> Any:
    """A state file's metadata number (``"12"``) as an int; anything else as it is, for the check to name."""
    return int(text) if isinstance(text, str) and text.isascii() and text.isdigit() else text


class _SamplingState:
    """``<state_dir>/smoothing_state.safetensors``: a :class:`SmoothingProgress` and what it was drawn for."""

    FILE = "smoothing_state.safetensors"
    #: Least seconds between two saves (the last one is always written): a save per forward pass would rewrite
    #: the counts of every example (ImageNet: 8 MB) after each batch of noisy images.
    every_s = 20.0

    def __init__(self, folder: Path, model: MixedClassifier, images: torch.Tensor, settings: dict[str, Any]) -> None:
        from robust_mix.benchmark import model_fingerprint

        self.path, self.saved_at, self.settings = folder / self.FILE, float("-inf"), settings
        digest = hashlib.sha256(images.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
        self.fingerprint = {**{k: str(v) for k, v in settings.items()}, "n_examples": str(len(images)),
                            "images": digest, "model": model_fingerprint(model)}

    def load(self) -> Optional[SmoothingProgress]:
        if not self.path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}
        except (SafetensorError, OSError, ValueError) as err:
            raise InvalidInputError(f"{self.path} cannot be read ({err}); delete it to start over") from None
        saved = {k: v for k, v in meta.items() if k not in ("phase", "next_start", "done")}
        if saved != self.fingerprint:
            differ = sorted(k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k))
            raise InvalidInputError(f"{self.path.parent} holds the samples of another certification (differs in "
                                    f"{differ}); rerun with the same model, images and settings to resume, or give "
                                    "another state folder (state_dir=..., or another --out)")
        try:
            progress = SmoothingProgress(meta.get("phase"), _whole(meta.get("next_start")), _whole(meta.get("done")),
                                         tensors.get("counts"), tensors.get("selection"), tensors.get("generator_state"))
            check_progress(progress, int(self.fingerprint["n_examples"]), self.settings["num_classes"],
                           self.settings["n0"], self.settings["n"], self.settings["batch_size"], torch.Generator())
        except InvalidInputError as err:
            raise InvalidInputError(f"{self.path} holds samples that cannot be resumed from: {err}; the file was "
                                    "edited or damaged after the run wrote it: delete it to start over") from None
        logger.info("resuming the smoothing samples from %s (%s, example %s)", self.path, progress.phase,
                    progress.next_start)
        return progress

    def save(self, progress: SmoothingProgress) -> None:
        from safetensors.torch import save

        tensors = {"counts": progress.counts.cpu().contiguous(), "generator_state": progress.generator_state.cpu()}
        if progress.selection is not None:
            tensors["selection"] = progress.selection.cpu().contiguous()
        now = time.monotonic()
        finished = progress.phase == "estimation" and progress.next_start == len(progress.counts)
        if now - self.saved_at < self.every_s and not finished:
            return
        self.saved_at = now
        meta = {**self.fingerprint, "phase": progress.phase, "next_start": str(progress.next_start),
                "done": str(progress.done)}
        atomic_write_bytes(self.path, save(tensors, metadata=meta))


def default_radii(radius: torch.Tensor, steps: int = 8) -> list[float]:
    """``steps + 1`` radii from 0 to the largest of ``radius`` (rounded up to 2 significant digits), or ``[0.0]``
    when nothing is certified: where to report certified accuracy when the caller names no radii."""
    largest = radius.max().item() if radius.numel() else 0.0
    if not largest > 0:
        return [0.0]
    unit = 10.0 ** (math.floor(math.log10(largest)) - 1)
    top = math.ceil(largest / unit) * unit
    return sorted({round(top * i / steps, 12) for i in range(steps + 1)})


def _clean_accuracy(model: MixedClassifier, std_logits: torch.Tensor, rob_logits: torch.Tensor,
                    alpha: torch.Tensor, labels: torch.Tensor) -> float:
    log_probs = mix_log_probs(std_logits, rob_logits, alpha.float(), mode=model.mixing,
                              std_scale=model.std_scale, rob_scale=model.rob_scale,
                              standard_map=model.standard_map, robust_map=model.robust_map)
    return (log_probs.argmax(dim=1) == labels).double().mean().item()


def plot_certification(result: Certification) -> bytes:
    """PNG of certified accuracy (%) against radius, one step curve per ratio (the robust base dashed)."""
    max_radius = max(max(result.report["radii"]), 1e-6)
    grid = torch.linspace(0, max_radius, 400, dtype=torch.float64)
    fig = new_figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    for curve, radius, ok in zip(result.report["curves"], result.radii, result.correct):
        acc = certified_accuracy(radius, ok, grid.tolist()).numpy() * 100
        style = dict(color="black", linestyle="--") if curve["alpha"] == 1.0 else {}
        ax.plot(grid.numpy(), acc, label=curve["label"], drawstyle="steps-post", **style)
    ax.set_xlabel(f"{result.xlabel} ([0, 1] pixel scale)" if result.xlabel else "radius ([0, 1] pixel scale)")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_title(f"{result.title}\n{_evaluated_on(result.report)}", fontsize=9)
    ax.set_xlim(0, max_radius)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


def _evaluated_on(report: dict[str, Any]) -> str:
    """What the curves were measured on, for the plot's title: ``"fashion-mnist test, 100 images, failure
    probability 0.001"`` (the parts the report has)."""
    where = " ".join(str(report[k]) for k in ("dataset", "split") if report.get(k))
    parts = [where, f"{report['n_examples']:,} images" if "n_examples" in report else ""]
    if report.get("failure_prob") is not None:
        parts.append(f"failure probability {report['failure_prob']:g}")
    return ", ".join(p for p in parts if p)


def write_certification(out_dir: Union[str, Path], result: Certification) -> dict[str, Path]:
    """Write ``certify.json`` and ``certify.png`` into ``out_dir`` as one set (:func:`robust_mix.io.atomic_write_files`:
    a failed or interrupted write leaves the folder's earlier two whole); returns the paths."""
    written = atomic_write_files(check_writable_dir(out_dir), {
        "certify.json": json.dumps(result.report, indent=2) + "\n", "certify.png": plot_certification(result)})
    return {"json": written["certify.json"], "png": written["certify.png"]}
