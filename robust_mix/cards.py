"""Model cards rendered from a :class:`ModelConfig` (and a benchmark report), never typed by hand.

The text lives in ``model_cards/template.md`` (``string.Template`` placeholders); this module fills
the placeholders and writes the YAML front matter, including the Hub's ``model-index`` when a
benchmark report is given, through :class:`huggingface_hub.ModelCardData`.

>>> report = read_benchmark("report.json")
>>> text = render_card(get_model_config("fmnist-adaptive"), benchmark=report)
"""
from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from robust_mix.attacks import resolve_attack
from robust_mix.config import BackboneConfig, ModelConfig, PolicyConfig
from robust_mix.formatting import attack_label, evaluation_label, format_eps, partial_reasons, percent_value
from robust_mix.io import atomic_write_text
from robust_mix.validate import check_fraction, non_negative_float, parse_number, positive_int

logger = logging.getLogger(__name__)

CARDS_DIR = Path(__file__).resolve().parent.parent / "model_cards"
TEMPLATE_PATH = CARDS_DIR / "template.md"
DEFAULT_REPORTS_DIR = Path("benchmarks/reports")
REGENERATE_ALL = "robust-mix card --all --out-dir model_cards"

REQUIRED_REPORT_KEYS = ("model", "dataset", "threat_model", "eps", "attack", "n_examples",
                        "clean_accuracy", "robust_accuracy")


# -- benchmark reports ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportSummary:
    """The part of a benchmark report a model card shows. Accuracies are fractions in ``[0, 1]``.

    Attributes:
        model: the name the report was produced for.
        attack: AutoAttack version (``"standard"``, ``"custom"``, ``"rand"``...).
        command: the command line that produced the report, when it recorded one.
        source: the report file's name.
        extra: the report's other scalar fields (seed, split, versions...), shown in the card.
        stage_names: the stages that ran, in order (the report's ``stage_accuracy`` keys); when empty,
            read from ``attack``.
        attack_settings, options: the attacks' budgets and the overridden ones, ``None`` when the report
            did not record them (then the card cannot call the attack AutoAttack).
    """

    model: str
    dataset: str
    threat_model: str
    eps: Optional[float]
    attack: str
    n_examples: int
    clean_accuracy: float
    robust_accuracy: float
    command: Optional[str] = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    stage_names: tuple[str, ...] = ()
    attack_settings: Optional[dict[str, Any]] = None
    options: Optional[dict[str, Any]] = None

    @property
    def stages(self) -> list[str]:
        """The stages that ran (from the report, else from the ``attack`` name)."""
        if self.stage_names:
            return list(self.stage_names)
        base, _, rest = self.attack.partition("+")
        try:
            return resolve_attack(base, adaptive="adaptive" in rest).stages
        except ValueError:
            return [self.attack]


def read_benchmark(path: Union[str, Path]) -> ReportSummary:
    """Read a benchmark report (JSON) and check the fields a card needs.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, a required key is missing, or a value has the wrong type or range.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark report not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"benchmark report {path} is not valid JSON: {err}") from err
    return benchmark_from_dict(data, source=path.name)


def benchmark_from_dict(data: Any, source: str = "report") -> ReportSummary:
    """Validate a benchmark report already parsed from JSON; see :func:`read_benchmark`."""
    if not isinstance(data, dict):
        raise ValueError(f"benchmark report {source} must be a JSON object, got {type(data).__name__}")
    missing = [key for key in REQUIRED_REPORT_KEYS if key not in data]
    if missing:
        raise ValueError(f"benchmark report {source} lacks key(s) {missing}; a report needs "
                         f"{list(REQUIRED_REPORT_KEYS)} and has {sorted(data)}")
    accuracies = {key: check_fraction(f"benchmark report {source}: {key}", data[key])
                  for key in ("clean_accuracy", "robust_accuracy")}
    n = positive_int(f"benchmark report {source}: n_examples", data["n_examples"])
    texts = {}
    for key in ("model", "dataset", "threat_model", "attack"):
        if not isinstance(data[key], str) or not data[key]:
            raise ValueError(f"benchmark report {source}: {key} must be a non-empty string, got {data[key]!r}")
        texts[key] = data[key]
    command_line = data.get("command")
    if isinstance(command_line, list):
        command_line = " ".join(str(part) for part in command_line)
    extra = {k: v for k, v in sorted(data.items())
             if k not in REQUIRED_REPORT_KEYS and k != "command" and _is_short_scalar(v)}
    stages = data.get("stage_accuracy")
    return ReportSummary(eps=_parse_eps(data["eps"], source), n_examples=int(n),
                           command=command_line or None, source=source, extra=extra,
                           stage_names=tuple(stages) if isinstance(stages, dict) else (),
                           attack_settings=_mapping(data.get("attack_settings")), options=_mapping(data.get("options")),
                           **texts, **accuracies)


def _mapping(value: Any) -> Optional[dict[str, Any]]:
    return dict(value) if isinstance(value, dict) else None


def _parse_eps(value: Any, source: str) -> Optional[float]:
    """``0.0314``, ``"8/255"`` or ``null`` (threat models without a radius)."""
    if value is None:
        return None
    name = f"benchmark report {source}: eps"
    return non_negative_float(name, parse_number(name, value) if isinstance(value, str) else value)


def _is_short_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and len(str(value)) <= 80


# -- text helpers ----------------------------------------------------------------------------------
def _code(value: Any) -> str:
    return f"`{value}`"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _describe_input(backbone: BackboneConfig) -> str:
    contract, parts = backbone.input, []
    if contract.input_size is not None:
        h, w = contract.input_size
        aa = ", antialiased" if contract.antialias else ""
        parts.append(f"resized to {h}x{w} ({contract.interpolation}{aa})")
    if contract.mean is not None and (any(contract.mean) or any(s != 1 for s in contract.std)):
        fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
        parts.append(f"normalised with mean {fmt(contract.mean)}, std {fmt(contract.std)}")
    elif contract.mean is None and backbone.ref.startswith("timm/"):
        parts.append("normalised with the timm weights' own mean and std")
    return "; ".join(parts) or "raw [0, 1] input"


def _base_models_section(config: ModelConfig, provenance: Optional[dict[str, Any]]) -> str:
    rows, notes = [], []
    for role, label in (("standard", "standard (accurate) `g`"), ("robust", "robust `h`")):
        base: BackboneConfig = getattr(config, role)
        kwargs = json.dumps(base.kwargs, sort_keys=True) if base.kwargs else ""
        rows.append([label, _code(base.ref), _code(kwargs) if kwargs else "-",
                     _describe_input(base), base.license or "not stated"])
        original = (provenance or {}).get(role)
        if original and original != base.ref:
            notes.append(f"The {role} model was saved from {_code(original)}; its architecture is "
                         f"{_code(base.ref)} and its weights are part of this model's `model.safetensors`.")
        if base.checkpoint:
            notes.append(f"The {role} model's weights are read from {_code(base.checkpoint)}.")
    classes = f"{config.num_classes} classes" if config.num_classes else "classes as the base models define"
    if config.labels:
        shown = ", ".join(config.labels[:20]) + (", ..." if len(config.labels) > 20 else "")
        classes = f"{len(config.labels)} classes: {shown}"
    return "\n\n".join([_table(["role", "reference", "constructor kwargs", "input contract", "licence"], rows),
                        *notes, f"Both base models are frozen and classify the same label set ({classes})."])


def _mixing_section(config: ModelConfig) -> str:
    if config.mixing == "logit":
        formula = "f(x) = log_softmax((1 - a(x)) * s_g * g(x) + a(x) * s_h * h(x))"
        how = "Logit mixing (the baseline)"
    else:
        formula = "f(x) = log((1 - a(x)) * softmax(s_g * g(x)) + a(x) * softmax(s_h * h(x)))"
        how = "Probability mixing (the method's default)"
    rows = [["mixing", _code(config.mixing)], ["standard temperature `s_g`", config.std_scale],
            ["robust temperature `s_h`", config.rob_scale]]
    if config.policy is None:
        lead = f"{how} with a fixed ratio `a(x) = {config.alpha}` (0 = standard only, 1 = robust only):"
        rows.insert(0, ["alpha", config.alpha])
    else:
        lead = (f"{how} with an adaptive ratio: a mixing network reads both base models' intermediate "
                "features and sets `a(x) = lo + (hi - lo) * sigmoid(BN(M(features)) * gamma_scale + gamma_bias)` "
                "per input:")
        if config.alpha is not None:
            lead += (f" the saved model applies the fixed ratio `a = {config.alpha}` instead; set "
                     "`model.alpha = None` to return to the policy.")
        rows += _policy_rows(config.policy)
    return f"{lead}\n\n```\n{formula}\n```\n\n" + _table(["constant", "value"], rows)


def _policy_rows(policy: PolicyConfig) -> list[list[Any]]:
    lo, hi = policy.alpha_range
    return [["alpha range `(lo, hi)`", f"({lo:g}, {hi:g})"], ["gamma scale", policy.gamma_scale],
            ["gamma bias", policy.gamma_bias],
            ["standard feature layers", _code(", ".join(policy.standard_layers))],
            ["robust feature layers", _code(", ".join(policy.robust_layers))],
            ["mixing-network widths", _code(list(policy.widths))], ["blocks per stage", policy.blocks],
            ["probe input shape `(C, H, W)`", _code(tuple(policy.input_shape))],
            ["features detached", policy.detach_features]]


def _evaluation_section(config: ModelConfig, benchmark: Optional[ReportSummary]) -> str:
    parts = []
    if benchmark is not None:
        rows = [[benchmark.dataset, benchmark.threat_model, format_eps(benchmark.eps),
                 evaluation_label(benchmark), benchmark.n_examples,
                 f"{percent_value(benchmark.clean_accuracy):.2f}", f"{percent_value(benchmark.robust_accuracy):.2f}"]]
        parts.append("Measured with robust_mix's benchmark:\n\n" + _table(
            ["dataset", "threat model", "eps", "attack", "examples", "clean %", "robust %"], rows))
        if benchmark.extra:
            parts.append("Other settings of the report: "
                         + ", ".join(f"{k} = {_code(v)}" for k, v in benchmark.extra.items()) + ".")
    rep = config.reported
    if rep is not None:
        source = f" ({rep.source})" if rep.source else ""
        parts.append(f"Reported by the authors{source}: {rep.clean_acc:.2f} % clean and "
                     f"{rep.autoattack_acc:.2f} % AutoAttack accuracy on {rep.n_examples} examples "
                     f"({config.dataset}, {config.threat_model}, eps {format_eps(config.eps)}).")
    if not parts:
        parts.append(f"Not evaluated yet. Intended setting: {config.dataset}, {config.threat_model}, "
                     f"eps {format_eps(config.eps)}.")
    return "\n\n".join(parts)


def _reproduce_section(config: ModelConfig, benchmark: Optional[ReportSummary],
                       regenerate: Optional[str]) -> str:
    parts = []
    if benchmark is not None and benchmark.command:
        parts.append(f"The numbers above come from `{benchmark.source}`, produced by:\n\n"
                     f"```\n{benchmark.command}\n```")
    elif benchmark is not None:
        parts.append(f"The numbers above come from `{benchmark.source}`, which does not record its command: "
                     f"{attack_label(benchmark)} on the first {benchmark.n_examples} "
                     f"{benchmark.dataset} test examples, {benchmark.threat_model}, eps "
                     f"{format_eps(benchmark.eps)}.")
    elif config.reported is not None:
        parts.append("The authors' numbers have not been re-measured with robust_mix yet.")
    else:
        parts.append("No evaluation has been recorded for this model.")
    if regenerate:
        parts.append(f"This card was rendered with `{regenerate}`.")
    return "\n\n".join(parts)


# -- the card ----------------------------------------------------------------------------------------
def card_metadata(config: ModelConfig, benchmark: Optional[ReportSummary] = None,
                  repo_id: Optional[str] = None) -> "ModelCardData":
    """The card's YAML front matter; a benchmark adds a ``model-index`` the Hub displays."""
    from huggingface_hub import EvalResult, ModelCardData

    results = None
    if benchmark is not None:
        common = dict(task_type="image-classification", task_name="Image Classification",
                      dataset_type=benchmark.dataset, dataset_name=benchmark.dataset)
        reasons = partial_reasons(benchmark)
        args = {"threat_model": benchmark.threat_model, "eps": benchmark.eps,
                "attack": attack_label(benchmark), "n_examples": benchmark.n_examples,
                **({"partial": "; ".join(reasons)} if reasons else {})}
        robust_name = f"{attack_label(benchmark)} robust accuracy (%)" + (" (partial evaluation)" if reasons else "")
        results = [
            EvalResult(metric_type="accuracy", metric_name="Clean accuracy (%)",
                       metric_value=percent_value(benchmark.clean_accuracy),
                       metric_args={"n_examples": benchmark.n_examples}, **common),
            EvalResult(metric_type="robust_accuracy", metric_name=robust_name,
                       metric_value=percent_value(benchmark.robust_accuracy), metric_args=args, **common)]
    tags = ["robust_mix", "image-classification", "adversarial-robustness",
            "adaptive-smoothing" if config.policy is not None else "mixed-classifier",
            config.dataset, config.threat_model]
    return ModelCardData(library_name="robust_mix", license=_model_license(config),
                         pipeline_tag="image-classification", tags=list(dict.fromkeys(tags)),
                         model_name=(repo_id or config.name).split("/")[-1], eval_results=results)


def _model_license(config: ModelConfig) -> str:
    if config.license:
        return config.license.lower()
    bases = {(b.license or "").lower() for b in (config.standard, config.robust)}
    return bases.pop() if len(bases) == 1 and "" not in bases else "unknown"


def render_card(config: ModelConfig, *, benchmark: Optional[ReportSummary] = None,
                repo_id: Optional[str] = None, provenance: Optional[dict[str, Any]] = None,
                usage: Optional[str] = None, regenerate: Optional[str] = None,
                template: Union[str, Path, None] = None) -> str:
    """The model card (``README.md``) of a mixed model.

    Args:
        config: a config with both base models.
        benchmark: results to show and to put in the ``model-index``.
        repo_id: the Hub repo the card is for (its usage example loads ``hf-hub:<repo_id>``).
        provenance: ``{"standard": ref, "robust": ref}`` the bases were saved from.
        usage: the Python lines of the usage example (default: load by registry or Hub name).
        regenerate: the command that renders this card, stated in it.
        template: a template file instead of ``model_cards/template.md``.

    Raises:
        ValueError: the config lacks a base model, or the template has an unknown placeholder.
    """
    if config.standard is None or config.robust is None:
        raise ValueError(f"{config.name!r} has no fixed base models (standard={config.standard}, "
                         f"robust={config.robust}); a card describes a concrete pair")
    template_path = Path(template) if template is not None else TEMPLATE_PATH
    if not template_path.is_file():
        raise FileNotFoundError(f"model card template not found: {template_path} (robust_mix renders cards "
                                "from a source checkout's model_cards/template.md; pass template=...)")
    if usage is None:
        name = f"hf-hub:{repo_id}" if repo_id else config.name
        usage = f"from robust_mix import load_model\n\nmodel = load_model({json.dumps(name)})\nlog_probs = model(images)"
    kind = "An adaptive" if config.policy is not None else f"A fixed-ratio (alpha = {config.alpha})"
    summary = "\n\n".join(s for s in (
        f"{kind} mixed classifier built with robust_mix for {config.dataset} "
        f"({config.threat_model}, eps {format_eps(config.eps)}): it mixes an accurate standard classifier "
        "with an adversarially robust one.", config.description, config.paper and f"Method: {config.paper}.")
        if s)
    citation = f"This model:\n\n```bibtex\n{config.citation.strip()}\n```\n\n" if config.citation else ""
    source = "the model's config and a benchmark report" if benchmark else "the model's config"
    values = {
        "metadata": card_metadata(config, benchmark, repo_id).to_yaml().strip(),
        "generated_note": f"Generated by robust_mix from {source}; change those (or model_cards/template.md), not this file.",
        "title": repo_id.split("/")[-1] if repo_id else config.name,
        "summary": summary,
        "base_models": _base_models_section(config, provenance),
        "mixing": _mixing_section(config),
        "evaluation": _evaluation_section(config, benchmark),
        "reproduce": _reproduce_section(config, benchmark, regenerate),
        "usage": usage,
        "citation": citation,
    }
    try:
        return string.Template(template_path.read_text()).substitute(values)
    except (KeyError, ValueError) as err:
        raise ValueError(f"model card template {template_path} has an unknown or malformed placeholder "
                         f"({err}); known placeholders: {sorted(values)}") from err


def zoo_card(name: str, benchmark: Optional[ReportSummary] = None,
             regenerate: Optional[str] = None) -> str:
    """The card of a registered entry (``model_cards/<name>.md``); ``regenerate`` is the command stated in it."""
    from robust_mix.registry import get_model_config

    if regenerate is None:
        regenerate = f"robust-mix card {name}" + (f" --benchmark {benchmark.source}" if benchmark else "")
    return render_card(get_model_config(name), benchmark=benchmark, regenerate=regenerate)


def render_all(out_dir: Union[str, Path], reports_dir: Union[str, Path, None] = DEFAULT_REPORTS_DIR
               ) -> tuple[list[Path], dict[str, str]]:
    """Write ``<out_dir>/<name>.md`` for every registered entry with fixed base models.

    A report ``<reports_dir>/<name>.json``, when present, adds its results to that card.

    Returns:
        The files written, and the skipped entries with the reason.
    """
    from robust_mix.registry import get_model_config, list_models

    written, skipped = [], {}
    for name in list_models():
        config = get_model_config(name)
        if config.standard is None or config.robust is None:
            skipped[name] = "a composition without fixed base models (they are given at load time)"
            continue
        report = Path(reports_dir) / f"{name}.json" if reports_dir is not None else None
        benchmark = read_benchmark(report) if report is not None and report.is_file() else None
        path = Path(out_dir) / f"{name}.md"
        atomic_write_text(path, zoo_card(name, benchmark, regenerate=REGENERATE_ALL))
        written.append(path)
    return written, skipped
