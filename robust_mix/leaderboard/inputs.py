"""What a leaderboard site is built from: benchmark reports, sweeps and certificates, checked once.

:func:`collect` walks the given files and folders for ``report.json`` (``robust-mix benchmark``),
``sweep.json`` (``robust-mix sweep``) and ``certify.json`` (``robust-mix certify``), reads each
with its own reader and checks that its numbers agree with themselves (accuracies against the
per-example flags, flags against the example count). :func:`choose_board` keeps the reports of
one leaderboard (data set, threat model, eps) and attaches sweeps and certificates to the
reports of the same model. Every file that is not used is returned as :class:`Rejected` with the
reason, so a site can list it: bad input never turns into a silently wrong number.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import numbers
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from robust_mix.config import ModelConfig
from robust_mix.results import INTERVAL_LEVEL, BenchmarkResult
from robust_mix.registry import get_model_config, labelled_config, model_label
from robust_mix.version import __version__
from robust_mix.formatting import format_eps, partial_reasons
from robust_mix.protocol import canonical_dataset, required_examples, same_eps
from robust_mix.sweep import POLICY, SweepPoint, read_sweep
from robust_mix.certification import check_method
from robust_mix.validate import (InvalidInputError, MalformedJSONError, check_fraction, check_open_probability,
                                 check_seed, check_wall_seconds, non_negative_float, parse_json, positive_float,
                                 positive_int)

logger = logging.getLogger(__name__)

REPORT_FILE, SWEEP_FILE, CERTIFY_FILE = "report.json", "sweep.json", "certify.json"
#: The file by which a folder is known as a site written by ``robust-mix leaderboard``.
SITE_MARKER = ".robust-mix-site"
INPUT_FILES = (REPORT_FILE, SWEEP_FILE, CERTIFY_FILE)
THREAT_MODELS = ("Linf", "L2", "L1")

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Rejected:
    """A file (or folder) the site does not use, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Board:
    """One leaderboard: data set (canonical name), threat model and eps."""

    dataset: str
    threat_model: str
    eps: float

    def describe(self) -> str:
        return f"{self.dataset} {self.threat_model} eps {format_eps(self.eps, self.threat_model)}"

    def holds(self, dataset: str, threat_model: str, eps: float) -> bool:
        return (canonical_dataset(dataset) == self.dataset and threat_model == self.threat_model
                and same_eps(eps, self.eps))


@dataclass
class SweepRun:
    """A ``sweep.json``: accuracies (fractions) along the mixing ratio, and the PNG written beside it."""

    path: Path
    model: str
    points: list[SweepPoint]
    metadata: dict[str, Any]
    png: Optional[Path]

    @property
    def attack(self) -> str:
        return str(self.metadata.get("attack") or ", ".join(sorted({p.attack for p in self.points})))

    @property
    def n_examples(self) -> int:
        return max(p.n_examples for p in self.points)

    def fixed_points(self) -> list[SweepPoint]:
        """The fixed-ratio points, by increasing alpha (the adaptive policy's point left out)."""
        return sorted((p for p in self.points if p.alpha != POLICY), key=lambda p: float(p.alpha))


@dataclass
class CertificateRun:
    """A ``certify.json``: certified accuracy (fractions) against radius for several ratios."""

    path: Path
    model: str
    dataset: str
    data: dict[str, Any]
    png: Optional[Path]


@dataclass
class Evaluation:
    """One benchmark report and what lies beside it (``model_info.json``, a model card)."""

    slug: str
    label: str
    path: Path
    result: BenchmarkResult
    written: str
    model_info: Optional[dict[str, Any]] = None
    model_info_error: Optional[str] = None
    sweeps: list[SweepRun] = field(default_factory=list)
    certificates: list[CertificateRun] = field(default_factory=list)

    @property
    def robust_successes(self) -> int:
        """Examples that survive every attack suite (the numerator of ``robust_accuracy``)."""
        return self.result.robust_successes

    def interval(self, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
        """Clopper-Pearson interval of the robust accuracy (fractions)."""
        return self.result.robust_interval(level)

    @property
    def leaderboard_examples(self) -> Optional[int]:
        return required_examples(canonical_dataset(self.result.dataset))

    @property
    def partial(self) -> bool:
        """Fewer examples than the leaderboard evaluates on (or a data set without a leaderboard size)."""
        needed = self.leaderboard_examples
        return needed is None or self.result.n_examples < needed

    def caveats(self) -> list[str]:
        """Why this row is not comparable with the leaderboard's (empty for a full evaluation), in a table cell's
        words (:func:`robust_mix.formatting.partial_reasons`); a randomized model's numbers are one draw even
        under EOT."""
        notes = partial_reasons(self.result, short=True)
        if self.result.randomized and self.result.attack.startswith("rand"):
            notes.append("randomized model: one draw")
        return notes

    @property
    def architecture(self) -> str:
        return str((self.model_info or {}).get("architecture") or "")

    @property
    def additional_data(self) -> Optional[bool]:
        value = (self.model_info or {}).get("additional_data")
        return value if isinstance(value, bool) else None

    def sibling(self, name: str) -> Optional[Path]:
        return file_beside(self.path, name)


def file_beside(path: Path, name: str) -> Optional[Path]:
    """The file ``name`` in the folder of ``path`` (a model card, ``model_info.json``, a plot), which the site
    publishes; ``None`` when there is none, or when it is a link to a file in another folder: a folder of runs from
    someone else could link ``README.md`` to ``~/.ssh/id_rsa``, and the site would publish that file (a warning
    names the link)."""
    candidate = path.parent / name
    if not candidate.is_file():
        return None
    target = candidate.resolve()
    if target.parent != path.parent.resolve():
        logger.warning("%s is a link to %s, outside the folder of %s: it is not read, so not published (copy the "
                       "file itself into the folder to publish it)", candidate, target, path.name)
        return None
    return candidate


@dataclass
class Inputs:
    """Everything :func:`collect` found, before a leaderboard is chosen."""

    evaluations: list[Evaluation] = field(default_factory=list)
    sweeps: list[SweepRun] = field(default_factory=list)
    certificates: list[CertificateRun] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


# -- finding files -----------------------------------------------------------------------------
def find_inputs(paths: Iterable[PathLike]) -> tuple[list[Path], list[Rejected]]:
    """The input files named by ``paths``: files as given, folders searched for :data:`INPUT_FILES`."""
    found: list[Path] = []
    rejected: list[Rejected] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            named = sorted(_named_inputs(path, rejected))
            inside = [p for p in named if p.is_file()]
            rejected.extend(Rejected(p, _not_a_file(p)) for p in named if not p.is_file())
            if not named:
                rejected.append(Rejected(path, f"no {', '.join(INPUT_FILES)} under this folder"))
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            rejected.append(Rejected(path, _not_a_file(path)))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, rejected


def _named_inputs(folder: Path, rejected: list[Rejected]) -> list[Path]:
    """Every entry named one of :data:`INPUT_FILES` under ``folder``, files or not (a broken link, a folder of that
    name: listed, so that they are said to be left out); a subfolder that cannot be listed is added to ``rejected``."""
    def unreadable(err: OSError) -> None:
        rejected.append(Rejected(Path(err.filename or folder), f"a folder that cannot be listed ({err.strerror}): "
                                                               "reports inside it are not read"))
    named = []
    for top, dirs, files in os.walk(folder, onerror=unreadable):
        if SITE_MARKER in files:  # a site built before (--out inside RUNS): its copies would be read as reports
            rejected.append(Rejected(Path(top), "a leaderboard site written by robust-mix leaderboard: the copies of "
                                                "reports in it are not read again (give its models/ folder to read "
                                                "them)"))
            dirs.clear()
            continue
        named += [Path(top, name) for name in (*dirs, *files) if name in INPUT_FILES]
    return named


def _not_a_file(path: Path) -> str:
    """Why ``path``, named as an input, cannot be read as one."""
    if path.is_symlink() and not path.exists():
        return f"a broken link (to {os.readlink(path)}, which does not exist): point it at the file, or remove it"
    if path.is_dir():
        return f"a folder named {path.name}, not a file: give the {path.name} it should be"
    if path.exists():
        return "not a regular file"
    return "no such file or folder"


def _kind(path: Path, data: Any) -> str:
    """``"report"``, ``"sweep"`` or ``"certificate"``: by file name, else by content."""
    by_name = {REPORT_FILE: "report", SWEEP_FILE: "sweep", CERTIFY_FILE: "certificate"}
    if path.name in by_name:
        return by_name[path.name]
    if isinstance(data, dict) and "points" in data:
        return "sweep"
    if isinstance(data, dict) and "curves" in data and "radii" in data:
        return "certificate"
    return "report"


# -- reports -----------------------------------------------------------------------------------
def _fraction_of(flags: Sequence[Any], n: int, name: str) -> float:
    if not isinstance(flags, list) or len(flags) != n or any(not isinstance(f, bool) for f in flags):
        got = len(flags) if isinstance(flags, list) else type(flags).__name__
        raise ValueError(f"{name} must hold one true/false flag per example ({n}), got {got}")
    return sum(flags) / n


def check_report(result: BenchmarkResult) -> None:
    """Check that a report's numbers agree with themselves.

    Raises:
        ValueError: naming the first field that disagrees (an accuracy that is not the mean of its
            flags, flags that do not cover ``n_examples``, an unknown threat model, a bad eps).
    """
    n = result.n_examples
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise ValueError(f"n_examples must be a positive integer, got {n!r}")
    if not isinstance(result.dataset, str) or not result.dataset:
        raise ValueError(f"dataset must be a non-empty string, got {result.dataset!r}")
    if result.threat_model not in THREAT_MODELS:
        raise ValueError(f"threat_model must be one of {list(THREAT_MODELS)}, got {result.threat_model!r}")
    eps = result.eps
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    if not isinstance(result.suite_accuracy, dict) or not isinstance(result.suite_flags, dict) \
            or set(result.suite_accuracy) != set(result.suite_flags):
        raise ValueError("suite_accuracy and suite_flags must name the same attack suites")
    pairs = [("clean_accuracy", result.clean_accuracy, result.clean_flags, "clean_flags"),
             ("robust_accuracy", result.robust_accuracy, result.robust_flags, "robust_flags")]
    pairs += [(f"suite_accuracy[{s!r}]", result.suite_accuracy[s], result.suite_flags[s], f"suite_flags[{s!r}]")
              for s in result.suite_flags]
    for name, value, flags, flags_name in pairs:
        measured = _fraction_of(flags, n, flags_name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isclose(
                value, measured, abs_tol=1e-9):
            raise ValueError(f"{name} is {value!r} but its {flags_name} give {sum(flags)}/{n} = {measured:.6g}: "
                             "the report was edited or damaged; rerun the benchmark to rewrite it")
    if any(r and not c for r, c in zip(result.robust_flags, result.clean_flags)):
        raise ValueError("robust_flags marks an example robust that clean_flags marks misclassified")
    for stage, acc in result.stage_accuracy.items():
        if isinstance(acc, bool) or not isinstance(acc, numbers.Real) or not 0 <= acc <= 1:
            raise ValueError(f"stage_accuracy[{stage!r}] must be a fraction in [0, 1], got {acc!r}")
    if isinstance(result.number_forward_passes, bool) or not isinstance(result.number_forward_passes, int) \
            or result.number_forward_passes < 1:
        raise ValueError(f"number_forward_passes must be a positive integer, got {result.number_forward_passes!r}")


def _writer_hint(data: Any) -> str:
    version = data.get("versions", {}).get("robust_mix") if isinstance(data, dict) and isinstance(
        data.get("versions"), dict) else None
    here = __version__
    if version and version != here:
        return f"; it was written by robust_mix {version} and this is robust_mix {here}: read it with that version"
    return ""


def read_report(text: str) -> BenchmarkResult:
    """A checked :class:`BenchmarkResult` from the text of a ``report.json``.

    Raises:
        ValueError: not a benchmark report of this format, or its numbers disagree (see :func:`check_report`).
    """
    data = parse_json(text)
    if not isinstance(data, dict):
        raise ValueError(f"not a benchmark report: expected a JSON object, got {type(data).__name__}")
    try:
        result = BenchmarkResult.from_json(text)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"not a benchmark report in the format robust_mix {__version__} reads "
                         f"({err}){_writer_hint(data)}") from err
    check_report(result)
    return result


def _written(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).date().isoformat()


def _model_info(path: Path) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    info_path = file_beside(path, "model_info.json")
    if path.name != REPORT_FILE or info_path is None:
        return None, None
    try:
        info = parse_json(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, f"{info_path.name} beside the report is not valid JSON ({err})"
    if not isinstance(info, dict):
        return None, f"{info_path.name} beside the report is not a JSON object"
    wrong = {key: f"{key} is {info[key]!r}, not {want}" for key, kind, want in _MODEL_INFO_SHOWN
             if info.get(key) is not None and not isinstance(info[key], kind)}
    if wrong:  # edited by hand: the table shows no value rather than a wrong one
        return ({k: v for k, v in info.items() if k not in wrong},
                f"{info_path.name} beside the report: {'; '.join(wrong.values())} (RobustBench's schema), so "
                f"{'it is' if len(wrong) == 1 else 'they are'} not shown")
    return info, None


#: The model-info fields the site shows, with the JSON type RobustBench's schema gives them.
_MODEL_INFO_SHOWN = (("architecture", str, "a string"), ("additional_data", bool, "true or false"))


# -- sweeps and certificates -------------------------------------------------------------------
def _sweep(path: Path) -> SweepRun:
    points, metadata = read_sweep(path)
    model = metadata.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("its metadata names no model; sweeps written by robust-mix sweep record it")
    return SweepRun(path, model, points, metadata, file_beside(path, path.with_suffix(".png").name))


def _number(value: Any) -> bool:
    """A finite JSON number (``true``/``false`` are not numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_certificate(path: Path, data: Any) -> CertificateRun:
    """A checked ``certify.json`` (written by ``robust-mix certify``).

    Raises:
        ValueError: a required field is missing or of the wrong type (``n_examples`` not a positive integer, a
            name not a string, a radius not a finite number >= 0), a curve does not give one fraction per radius,
            or a curve's certified accuracy rises with the radius.
    """
    if not isinstance(data, dict):
        raise ValueError(f"not a certificate report: expected a JSON object, got {type(data).__name__}")
    required = ("model", "dataset", "n_examples", "method", "norm", "radii", "curves")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"not a certificate report: lacks {missing} (robust-mix certify writes {list(required)})")
    n = data["n_examples"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_examples must be a positive integer, got {n!r}")
    for key in ("model", "dataset", "method", "norm"):
        if not isinstance(data[key], str) or not data[key]:
            raise ValueError(f"{key} must be a non-empty string, got {data[key]!r}")
    radii = data["radii"]
    if not isinstance(radii, list) or not radii or not all(_number(r) and r >= 0 for r in radii):
        raise ValueError(f"radii must be a non-empty list of finite non-negative numbers, got {radii!r}")
    if not isinstance(data["curves"], list) or not data["curves"]:
        raise ValueError("curves must be a non-empty list")
    by_radius = sorted(range(len(radii)), key=lambda j: radii[j])
    for i, curve in enumerate(data["curves"]):
        acc = curve.get("certified_accuracy") if isinstance(curve, dict) else None
        if not isinstance(acc, list) or len(acc) != len(radii) or not all(_number(a) and 0 <= a <= 1 for a in acc):
            raise ValueError(f"curve {i} must give certified_accuracy as one fraction per radius ({len(radii)})")
        rise = next(((j, k) for j, k in zip(by_radius, by_radius[1:]) if acc[k] > acc[j] + 1e-9), None)
        if rise is not None:
            j, k = rise
            raise ValueError(f"curve {i} certifies more examples at radius {radii[k]!r} ({acc[k]!r}) than at the "
                             f"smaller radius {radii[j]!r} ({acc[j]!r}), but a certificate that reaches a radius "
                             "reaches every smaller one: the file was edited or corrupted; rerun robust-mix certify")
        if not isinstance(curve.get("label"), str):
            raise ValueError(f"curve {i} has no label")
    _check_certificate_settings(data)
    return CertificateRun(path, str(data["model"]), canonical_dataset(str(data["dataset"])), data,
                          file_beside(path, path.with_suffix(".png").name))


#: A certificate's settings by method, as ``certify_model`` writes them, with the rule each is read by.
_CERTIFICATE_SETTINGS: dict[str, dict[str, Any]] = {
    "smoothing": {"sigma": positive_float, "n0": positive_int, "n": positive_int,
                  "failure_prob": check_open_probability, "seed": check_seed},
    "lipschitz": {"lipschitz": positive_float},
}
#: A curve's figures besides its certified accuracy, as ``certify_model`` writes them, with their rules.
_CURVE_FIGURES: dict[str, Any] = {"alpha_mean": check_fraction, "abstain_rate": check_fraction,
                                  "mixed_clean_accuracy": check_fraction,
                                  "median_radius_certified_correct": non_negative_float}


def _check_certificate_settings(data: dict[str, Any]) -> None:
    """The method, norm and settings of a ``certify.json`` and its curves' other figures, by the rules
    ``certify_model`` takes them with (:func:`robust_mix.certification.check_method`, :mod:`robust_mix.validate`): a
    norm no method certifies, a NaN sigma, a failure probability of 2, a negative seed or an abstain rate of 1.5 were
    read and shown.

    Raises:
        ValueError: naming the field and its value, and what to do.
    """
    try:
        method, _, _ = check_method(data["method"], None, data["norm"])
        for key, rule in _CERTIFICATE_SETTINGS[method].items():
            if key in data:  # certificates written before a setting was recorded lack it
                rule(key, data[key])
        if "seconds" in data:
            check_wall_seconds("seconds", data["seconds"])
        for i, curve in enumerate(data["curves"]):
            for key, rule in _CURVE_FIGURES.items():
                if key in curve:
                    rule(f"curve {i} {key}", curve[key])
            alpha = curve.get("alpha")
            if "alpha" in curve and not (isinstance(alpha, str) and alpha in ("applied", "lower")):
                for value in alpha if isinstance(alpha, list) and alpha else [alpha]:
                    check_fraction(f"curve {i} alpha (a ratio, 'applied', 'lower' or one ratio per example)", value)
    except InvalidInputError as err:
        raise ValueError(f"{err}; the file was edited or corrupted: rerun robust-mix certify") from None


def config_of(model: str) -> Optional[ModelConfig]:
    """The registered entry a report's or sweep's model label names, its overrides applied
    (:func:`robust_mix.registry.labelled_config`); ``None`` when it names none, or overrides no config takes."""
    try:
        return labelled_config(model)
    except (ValueError, TypeError) as err:
        logger.warning("model %r names a registered entry with overrides it does not take (%s): its config is not "
                       "used", model, err)
        return None


def _curve_key(model: str) -> str:
    """A model label without its fixed ratio (``fmnist-robust,alpha=0.9`` -> ``fmnist-robust``), aliases as the
    entry's name: the model whose alphas a sweep runs."""
    config = config_of(model)
    if config is None:
        return model
    entry = get_model_config(config.name)
    return model_label(dataclasses.replace(config, alpha=entry.alpha))


def _sweep_setting(run: SweepRun) -> tuple[Optional[str], Optional[str], Optional[float]]:
    """(dataset, threat model, eps) of a sweep: as its points record them (what each evaluation ran), else as its
    arguments record, else its registered entry's.

    Raises:
        ValueError: the points record different settings (one sweep drawn as one curve must be one setting).
    """
    recorded = {(canonical_dataset(p.dataset), p.threat_model, p.eps) for p in run.points
                if p.dataset is not None and p.threat_model is not None and p.eps is not None}
    if len({(d, t) for d, t, _ in recorded}) > 1 or any(
            not same_eps(a[2], b[2]) for a in recorded for b in recorded if a[:2] == b[:2]):
        settings = "; ".join(sorted(f"{d} {t} eps {format_eps(e, t)}" for d, t, e in recorded))
        raise ValueError(f"its points were measured in different settings ({settings}): a sweep is one curve of "
                         "one setting; sweep each setting into its own folder")
    arguments = run.metadata.get("arguments") if isinstance(run.metadata.get("arguments"), dict) else {}
    dataset, threat, eps = next(iter(recorded), (arguments.get("dataset"), arguments.get("threat_model"),
                                                 arguments.get("eps")))
    config = config_of(run.model)
    if config is not None:
        dataset, threat = dataset or config.dataset, threat or config.threat_model
        eps = eps if eps is not None else config.eps
    return (canonical_dataset(dataset) if isinstance(dataset, str) else None, threat,
            float(eps) if isinstance(eps, (int, float)) else None)


# -- the whole input ---------------------------------------------------------------------------
#: Longest slug (file name of a model page, without ``.html``) made from a label: file names are limited (255 bytes
#: on most file systems), and a longer label is cut and told apart by a digest of the whole.
SLUG_LENGTH = 64


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"
    if len(base) > SLUG_LENGTH:
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        base = f"{base[:SLUG_LENGTH - 9].rstrip('-.')}-{digest}"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _labels(paths: Sequence[Path]) -> list[str]:
    """A row label per report: its folder's name (a ``report.json``) or its file's stem, with as many parent
    folders as it takes to tell apart reports whose labels would otherwise be the same (``a/run``, ``b/run``)."""
    parts = [[q for q in (p.parent.parts if p.name == REPORT_FILE else (*p.parent.parts, p.stem)) if q != p.anchor]
             for p in paths]
    depth = [1] * len(paths)
    while True:
        labels = ["/".join(q[-d:]) or str(p) for q, d, p in zip(parts, depth, paths)]
        counts = Counter(labels)
        longer = [i for i, label in enumerate(labels) if counts[label] > 1 and depth[i] < len(parts[i])]
        if not longer:
            return labels
        for i in longer:
            depth[i] += 1


def _json_error(path: Path, text: str, err: json.JSONDecodeError) -> str:
    if path.suffix != ".json":
        return f"not a JSON file: expected {', '.join(INPUT_FILES)} (or another .json report)"
    if not text.strip():
        return "an empty file: rerun the command that writes it"
    if isinstance(err, MalformedJSONError):
        return f"not JSON robust_mix reads ({err}): rerun the command that writes it"
    if text.lstrip().startswith(("{", "[")) and not text.rstrip().endswith(("}", "]")):
        return (f"truncated JSON (it stops after {len(text)} characters, before its closing brace): the write "
                "was cut short; rerun the command that writes it")
    return f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"


def collect(paths: Iterable[PathLike]) -> Inputs:
    """Read every report, sweep and certificate named by ``paths`` (files, or folders to search)."""
    files, rejected = find_inputs(paths)
    inputs = Inputs(rejected=rejected)
    reports: list[tuple[Path, BenchmarkResult]] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            inputs.rejected.append(Rejected(path, f"cannot be read as text ({err})"))
            continue
        try:
            data = parse_json(text)
        except json.JSONDecodeError as err:
            inputs.rejected.append(Rejected(path, _json_error(path, text, err)))
            continue
        kind = _kind(path, data)
        try:
            if kind == "sweep":
                inputs.sweeps.append(_sweep(path))
            elif kind == "certificate":
                inputs.certificates.append(read_certificate(path, data))
            else:
                reports.append((path, read_report(text)))
        except ValueError as err:
            inputs.rejected.append(Rejected(path, str(err)))
    first: dict[str, Path] = {}
    unique: list[tuple[Path, BenchmarkResult]] = []
    for path, result in reports:
        key = json.dumps(result.to_dict(), sort_keys=True)
        if key in first:
            inputs.rejected.append(Rejected(path, f"the same report as {first[key]} (a copy): each evaluation is "
                                                  "ranked once"))
        else:
            first[key] = path
            unique.append((path, result))
    taken: set[str] = set()
    for label, (path, result) in zip(_labels([path for path, _ in unique]), unique):
        info, info_error = _model_info(path)
        inputs.evaluations.append(Evaluation(_slug(label, taken), label, path, result, _written(path),
                                             info, info_error))
    return inputs


def describe_request(dataset: Optional[str] = None, threat_model: Optional[str] = None,
                     eps: Optional[float] = None) -> str:
    """The leaderboard asked for, in words (``"dataset cifar10, eps 8/255"``; empty when nothing was asked)."""
    parts = ([f"dataset {canonical_dataset(dataset)}"] if dataset is not None else []) + (
        [f"threat model {threat_model}"] if threat_model is not None else []) + (
        [f"eps {format_eps(eps, threat_model)}"] if eps is not None else [])
    return ", ".join(parts)


def choose_board(inputs: Inputs, dataset: Optional[str] = None, threat_model: Optional[str] = None,
                 eps: Optional[float] = None) -> tuple[Optional[Board], Inputs]:
    """Keep one leaderboard's reports; attach sweeps and certificates to the reports of their model.

    The board is the one given (any part left ``None`` is filled from the reports), else the one
    with the most reports (the first listed on a tie). Reports of other boards, and sweeps or
    certificates with no report of their model on the board, become :class:`Rejected`.
    """
    kept = Inputs(rejected=list(inputs.rejected))
    candidates = [e for e in inputs.evaluations
                  if (dataset is None or canonical_dataset(e.result.dataset) == canonical_dataset(dataset))
                  and (threat_model is None or e.result.threat_model == threat_model)
                  and (eps is None or same_eps(e.result.eps, eps))]
    groups: dict[Board, int] = {}
    for e in candidates:
        key = next((b for b in groups if b.holds(e.result.dataset, e.result.threat_model, e.result.eps)),
                   Board(canonical_dataset(e.result.dataset), e.result.threat_model, float(e.result.eps)))
        groups[key] = groups.get(key, 0) + 1
    board = max(groups, key=lambda b: groups[b]) if groups else None  # max keeps the first on ties
    request = describe_request(dataset, threat_model, eps)
    how = f"the board asked for: {request}" if request else "the board with the most reports"
    for e in inputs.evaluations:
        if board is not None and board.holds(e.result.dataset, e.result.threat_model, e.result.eps):
            kept.evaluations.append(e)
        else:
            other = Board(canonical_dataset(e.result.dataset), e.result.threat_model, float(e.result.eps))
            site = (f"this site is {board.describe()} ({how})" if board is not None
                    else f"no report given is for the board asked for ({request})")
            kept.rejected.append(Rejected(e.path, f"a report for {other.describe()}, but {site}; build a separate "
                                                  "site for it, or choose it with --dataset/--threat-model/--eps"))
    by_model: dict[str, list[Evaluation]] = {}
    by_curve: dict[str, list[Evaluation]] = {}  # a sweep runs its own alphas: it belongs beside every alpha's report
    for e in kept.evaluations:
        by_model.setdefault(e.result.model, []).append(e)
        by_curve.setdefault(_curve_key(e.result.model), []).append(e)
    for run in inputs.sweeps:
        try:
            setting = _sweep_setting(run)
        except ValueError as err:
            kept.rejected.append(Rejected(run.path, str(err)))
            continue
        if board is not None and None not in setting and not board.holds(*setting):
            kept.rejected.append(Rejected(run.path, f"a sweep on {setting[0]} {setting[1]} eps "
                                                    f"{format_eps(setting[2], setting[1])}, but this site is {board.describe()}"))
        elif _curve_key(run.model) not in by_curve:
            kept.rejected.append(Rejected(run.path, f"no benchmark report of model {run.model!r} on this site; "
                                                    "sweeps are drawn beside their model's report"))
        else:
            kept.sweeps.append(run)
            for e in by_curve[_curve_key(run.model)]:
                e.sweeps.append(run)
    for cert in inputs.certificates:
        if board is not None and cert.dataset != board.dataset:
            kept.rejected.append(Rejected(cert.path, f"certificates on {cert.dataset}, but this site is "
                                                     f"{board.describe()}"))
        elif cert.model not in by_model:
            kept.rejected.append(Rejected(cert.path, f"no benchmark report of model {cert.model!r} on this site; "
                                                     "certificates are shown on their model's page"))
        else:
            kept.certificates.append(cert)
            for e in by_model[cert.model]:
                e.certificates.append(cert)
    return board, kept
