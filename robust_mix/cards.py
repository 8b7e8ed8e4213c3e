"""Model cards rendered from a :class:`ModelConfig` (and a benchmark report), never typed by hand.

The text lives in the package's ``templates/model_card.md`` (``string.Template`` placeholders, read
through ``importlib.resources``, so installed wheels have it); this module fills
the placeholders and writes the YAML front matter, including the Hub's ``model-index`` when a
benchmark report is given, through :class:`huggingface_hub.ModelCardData`.

>>> report = BenchmarkResult.from_json("runs/fmnist-adasmooth/report.json")
>>> text = render_card(get_model_config("fmnist-adasmooth"), benchmark=report)
"""
from __future__ import annotations

import importlib.resources
import json
import logging
import string
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from huggingface_hub import EvalResult, ModelCardData

from robust_mix.config import BackboneConfig, ModelConfig, PolicyConfig
from robust_mix.formatting import (attack_label, evaluation_label, format_eps, markdown_code, markdown_table,
                                   partial_reasons, percent_interval, percent_value)
from robust_mix.io import atomic_write_text
from robust_mix.protocol import canonical_dataset
from robust_mix.registry import get_model_config, list_models, model_label, report_names
from robust_mix.results import INTERVAL_LEVEL, BenchmarkResult, ReportLike, read_report
from robust_mix.validate import InvalidInputError

logger = logging.getLogger(__name__)

TEMPLATE = "templates/model_card.md"  # inside the robust_mix package
DEFAULT_REPORTS_DIR = Path("benchmarks/reports")
REGENERATE_ALL = "robust-mix card --all --out-dir model_cards"

#: The licence identifiers the Hugging Face Hub accepts in a card's ``license:`` (its "Licenses" page); the Hub refuses
#: a README whose ``license`` is any other text. ``unknown``: not stated; ``other``: named by ``license_name`` and
#: ``license_link``.
HUB_LICENSES = frozenset("""
    apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0
    cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0
    cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
    cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl
    gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr
    mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
    llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other
""".split())
#: Data set (:func:`robust_mix.protocol.canonical_dataset`) -> its Hugging Face Hub dataset id and display name, for
#: the ``model-index`` (the Hub links ``dataset.type`` to the data set's page; the test split is what is evaluated).
HUB_DATASETS: dict[str, tuple[str, str]] = {
    "cifar10": ("uoft-cs/cifar10", "CIFAR-10"), "cifar100": ("uoft-cs/cifar100", "CIFAR-100"),
    "imagenet": ("ILSVRC/imagenet-1k", "ImageNet-1k"),
    "fashion-mnist": ("zalando-datasets/fashion_mnist", "Fashion-MNIST"),
}

# -- text helpers (Markdown tables and code spans: robust_mix.formatting) ---------------------------
def _describe_input(backbone: BackboneConfig) -> str:
    contract, parts = backbone.input, []
    if contract.input_size is not None:
        h, w = contract.input_size
        aa = ", antialiased" if contract.antialias else ""
        parts.append(f"resized to {h}x{w} ({contract.interpolation}{aa})")
    if contract.mean is not None and (any(contract.mean) or any(s != 1 for s in contract.std)):
        fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
        parts.append(f"normalised with mean {fmt(contract.mean)}, std {fmt(contract.std)}")
    elif contract.mean is None and backbone.ref.startswith("timm/") and backbone.weights is None:
        parts.append("normalised with the timm weights' own mean and std")
    return "; ".join(parts) or "raw [0, 1] input"


def _base_models_section(config: ModelConfig, provenance: Optional[dict[str, Any]]) -> str:
    rows, notes = [], []
    for role, label in (("standard", "standard (accurate) `g`"), ("robust", "robust `h`")):
        base: BackboneConfig = getattr(config, role)
        kwargs = json.dumps(base.kwargs, sort_keys=True) if base.kwargs else ""
        rows.append([label, markdown_code(base.ref), markdown_code(kwargs) if kwargs else "-",
                     _describe_input(base), base.license or "not stated"])
        original = (provenance or {}).get(role)
        if original and original != base.ref:
            notes.append(f"The {role} model was saved from {markdown_code(original)}; its architecture is "
                         f"{markdown_code(base.ref)} and its weights are part of this model's `model.safetensors`.")
        if base.weights is not None:
            notes.append(f"The {role} model's weights are read from {markdown_code(base.weights.describe())}.")
    classes = f"{config.num_classes} classes" if config.num_classes else "classes as the base models define"
    if config.labels:
        shown = ", ".join(config.labels[:20]) + (", ..." if len(config.labels) > 20 else "")
        classes = f"{len(config.labels)} classes: {shown}"
    return "\n\n".join([markdown_table(["role", "reference", "constructor kwargs", "input contract", "licence"], rows),
                        *notes, f"Both base models are frozen and classify the same label set ({classes}).",
                        *filter(None, [_licence_note(config)])])


def _mixing_section(config: ModelConfig) -> str:
    if config.mixing == "logit":
        formula = "f(x) = log_softmax((1 - a(x)) * s_g * g(x) + a(x) * s_h * h(x))"
        how = "Logit mixing (the baseline)"
    else:
        formula = "f(x) = log((1 - a(x)) * softmax(s_g * g(x)) + a(x) * softmax(s_h * h(x)))"
        how = "Probability mixing (the method's default)"
    rows = [["mixing", markdown_code(config.mixing)], ["standard temperature `s_g`", config.std_scale],
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
    return f"{lead}\n\n```\n{formula}\n```\n\n" + markdown_table(["constant", "value"], rows)


def _policy_rows(policy: PolicyConfig) -> list[list[Any]]:
    lo, hi = policy.alpha_range
    return [["alpha range `(lo, hi)`", f"({lo:g}, {hi:g})"], ["gamma scale", policy.gamma_scale],
            ["gamma bias", policy.gamma_bias],
            ["standard feature layers", markdown_code(", ".join(policy.standard_layers))],
            ["robust feature layers", markdown_code(", ".join(policy.robust_layers))],
            ["mixing-network widths", markdown_code(list(policy.widths))], ["blocks per stage", policy.blocks],
            ["probe input shape `(C, H, W)`", markdown_code(tuple(policy.input_shape))],
            ["features detached", policy.detach_features]]


def _report_settings(result: BenchmarkResult) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in result.versions.items() if k in ("robust_mix", "torch", "pyautoattack"))
    settings = [f"seed {result.seed}", f"{result.world_size} process(es)",
                f"{result.wall_time_s:.0f} s" + (" (resumed)" if result.resumed_chunks else "")]
    return "Other settings of the report: " + ", ".join(settings + ([versions] if versions else [])) + "."


def _evaluation_section(config: ModelConfig, benchmark: Optional[BenchmarkResult]) -> str:
    parts = []
    if benchmark is not None:
        row = [benchmark.dataset, benchmark.threat_model, format_eps(benchmark.eps, benchmark.threat_model), evaluation_label(benchmark),
               benchmark.n_examples, f"{percent_value(benchmark.clean_accuracy):.2f}",
               f"{percent_value(benchmark.robust_accuracy):.2f}", percent_interval(benchmark.robust_interval())]
        headers = ["dataset", "threat model", "eps", "attack", "examples", "clean %", "robust %",
                   f"{INTERVAL_LEVEL * 100:g} % interval"]
        clean, images = benchmark.best_clean
        if images != benchmark.n_examples:  # clean accuracy on more images than were attacked
            headers[5] = "clean % (attacked)"
            headers.insert(5, f"clean % ({images:,} images)")
            row.insert(5, f"{percent_value(clean):.2f}")
        parts.append("Measured with robust_mix's benchmark (the interval: Clopper-Pearson, of the robust accuracy on "
                     "the attacked examples):\n\n" + markdown_table(headers, [row]))
        parts.append(_report_settings(benchmark))
    rep = config.reported
    if rep is not None:
        source = f" ({rep.source})" if rep.source else ""
        parts.append(f"Reported by the authors{source}: {rep.clean_acc:.2f} % clean and "
                     f"{rep.autoattack_acc:.2f} % AutoAttack accuracy on {rep.n_examples} examples "
                     f"({config.dataset}, {config.threat_model}, eps {format_eps(config.eps, config.threat_model)}).")
    if not parts:
        parts.append(f"Not evaluated yet. Intended setting: {config.dataset}, {config.threat_model}, "
                     f"eps {format_eps(config.eps, config.threat_model)}.")
    return "\n\n".join(parts)


def _reproduce_section(config: ModelConfig, benchmark: Optional[BenchmarkResult], source: str,
                       regenerate: Optional[str]) -> str:
    parts = []
    if benchmark is not None and benchmark.command:
        parts.append(f"The numbers above come from `{source}`, produced by:\n\n"
                     f"```\n{benchmark.command}\n```")
    elif benchmark is not None:
        parts.append(f"The numbers above come from `{source}`, which does not record its command: "
                     f"{attack_label(benchmark)} on the first {benchmark.n_examples} "
                     f"{benchmark.dataset} test examples, {benchmark.threat_model}, eps "
                     f"{format_eps(benchmark.eps, benchmark.threat_model)}.")
    elif config.reported is not None:
        parts.append("The authors' numbers have not been re-measured with robust_mix yet.")
    else:
        parts.append("No evaluation has been recorded for this model.")
    if regenerate:
        parts.append(f"This card was rendered with `{regenerate}`.")
    return "\n\n".join(parts)


# -- the card ----------------------------------------------------------------------------------------
def card_metadata(config: ModelConfig, benchmark: Optional[BenchmarkResult] = None,
                  repo_id: Optional[str] = None) -> "ModelCardData":
    """The card's YAML front matter; a benchmark adds a ``model-index`` the Hub displays.

    Tags: ``robust_mix``, ``robustbench``, ``timm`` (it loads through timm after ``import robust_mix``),
    ``adversarial-robustness``, the method, the data set, the threat model and the budget
    (``eps-8-255`` for 8/255): the benchmark's setting when there is one (its numbers are for it), else the entry's.
    """

    results = None
    if benchmark is not None:
        hub_id, pretty = HUB_DATASETS.get(canonical_dataset(benchmark.dataset), (benchmark.dataset, benchmark.dataset))
        common = dict(task_type="image-classification", task_name="Image Classification",
                      dataset_type=hub_id, dataset_name=pretty, dataset_split="test")
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
    # data set, threat model and eps from one source: an L2 run of a Linf entry was tagged "Linf" and "eps-0.5"
    dataset, threat, eps = ((benchmark.dataset, benchmark.threat_model, benchmark.eps) if benchmark is not None
                            else (config.dataset, config.threat_model, config.eps))
    tags = ["robust_mix", "robustbench", "timm", "image-classification", "adversarial-robustness",
            "adaptive-smoothing" if config.policy is not None else "mixed-classifier",
            dataset, threat] + ([f"eps-{format_eps(eps, threat).replace('/', '-')}"] if eps else [])
    return ModelCardData(library_name="robust_mix", license=hub_license(config),
                         pipeline_tag="image-classification", tags=list(dict.fromkeys(tags)),
                         model_name=(repo_id or config.name).split("/")[-1], eval_results=results)


def hub_license(config: ModelConfig) -> str:
    """The card's ``license:``, a Hub licence id: the entry's licence (else its bases' one shared licence) when it is
    one of :data:`HUB_LICENSES` in any case (``"MIT"`` -> ``"mit"``), else ``"unknown"``. A licence given as prose
    ("not stated by the authors ...", "CC-BY-NC-4.0 at most (...)") is not an id (the Hub refuses such a card): the
    card's text states it (:func:`_licence_note`) and the metadata says ``unknown``."""
    stated = config.license
    if not stated:
        bases = {(b.license or "") for b in (config.standard, config.robust) if b is not None}
        stated = bases.pop() if len(bases) == 1 else ""
    key = stated.strip().lower()
    if key in HUB_LICENSES:
        return key
    if key:
        logger.info("licence %r of %r is not a Hugging Face Hub licence id: the card's metadata says 'unknown' and "
                    "its text states the licence", stated, config.name)
    return "unknown"


def _licence_note(config: ModelConfig) -> str:
    """The sentence stating the model's own licence, when the card's ``license:`` cannot (prose, not an id)."""
    if not config.license or config.license.strip().lower() in HUB_LICENSES:
        return ""
    return f"Licence of this model: {config.license.strip()}."


def render_card(config: ModelConfig, *, benchmark: Optional[BenchmarkResult] = None,
                benchmark_source: str = "report.json",
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
        template: a template file instead of the package's ``templates/model_card.md``.

    Raises:
        ValueError: the config lacks a base model, or the template has an unknown placeholder.
    """
    if config.standard is None or config.robust is None:
        raise ValueError(f"{config.name!r} has no fixed base models (standard={config.standard}, "
                         f"robust={config.robust}); a card describes a concrete pair")
    if template is not None:
        template_path = Path(template)
        if not template_path.is_file():
            raise FileNotFoundError(f"model card template not found: {template_path}")
        text = template_path.read_text()
    else:
        template_path = Path(TEMPLATE)
        text = importlib.resources.files("robust_mix").joinpath(TEMPLATE).read_text()
    if usage is None:
        name = f"hf-hub:{repo_id}" if repo_id else config.name
        usage = f"from robust_mix import load_model\n\nmodel = load_model({json.dumps(name)})\nlog_probs = model(images)"
    kind = "An adaptive" if config.policy is not None else f"A fixed-ratio (alpha = {config.alpha})"
    summary = "\n\n".join(s for s in (
        f"{kind} mixed classifier built with robust_mix for {config.dataset} "
        f"({config.threat_model}, eps {format_eps(config.eps, config.threat_model)}): it mixes an accurate standard classifier "
        "with an adversarially robust one.", config.description, config.paper and f"Method: {config.paper}.")
        if s)
    citation = f"This model:\n\n```bibtex\n{config.citation.strip()}\n```\n\n" if config.citation else ""
    source = "the model's config and a benchmark report" if benchmark else "the model's config"
    values = {
        "metadata": card_metadata(config, benchmark, repo_id).to_yaml().strip(),
        "generated_note": f"Generated by robust_mix from {source}; change those (or robust_mix/templates/model_card.md), not this file.",
        "title": repo_id.split("/")[-1] if repo_id else config.name,
        "summary": summary,
        "base_models": _base_models_section(config, provenance),
        "mixing": _mixing_section(config),
        "evaluation": _evaluation_section(config, benchmark),
        "reproduce": _reproduce_section(config, benchmark, benchmark_source, regenerate),
        "usage": usage,
        "citation": citation,
    }
    try:
        return string.Template(text).substitute(values)
    except (KeyError, ValueError) as err:
        raise ValueError(f"model card template {template_path} has an unknown or malformed placeholder "
                         f"({err}); known placeholders: {sorted(values)}") from err


def zoo_card(name: str, benchmark: Optional[ReportLike] = None,
             regenerate: Optional[str] = None) -> str:
    """The card of a registered entry (``model_cards/<name>.md``), with a report's results when given
    (a :class:`BenchmarkResult` or a ``report.json`` path); ``regenerate`` is the command stated in it."""
    result, source = read_report(benchmark) if benchmark is not None else (None, "")
    if regenerate is None:
        regenerate = f"robust-mix card {name}" + (f" --benchmark {source}" if result is not None else "")
    config = get_model_config(name)
    if result is not None:
        check_report_is_for(config, result, source)
    return render_card(config, benchmark=result, benchmark_source=source, regenerate=regenerate)


def check_report_is_for(config: ModelConfig, result: BenchmarkResult, source: str = "the report", *,
                        fingerprints: Optional[Sequence[str]] = None, rerun: Optional[str] = None) -> None:
    """Refuse a report that did not evaluate the entry ``config`` as registered: another model, or the entry with
    other constants (its ``config_fingerprint`` differs: an overridden alpha, alpha range, temperature or bases).
    A report without a fingerprint (written by an older robust_mix) is accepted with a warning.

    The one check of every card a report goes into: ``robust-mix card NAME --benchmark`` and
    ``MixedClassifier.save_pretrained`` / ``push_to_hub`` (``benchmark=``).

    Args:
        config: the model the card is of.
        result, source: the report, and what to call it in messages (its path).
        fingerprints: the config fingerprints a report of this model may carry (default: ``config``'s own).
        rerun: how to get a report that fits (default: benchmark the entry as registered).

    Raises:
        robust_mix.validate.InvalidInputError: naming both models or both fingerprints, and what to run.
    """
    rerun = rerun or (f"benchmark the entry as registered (robust-mix benchmark {config.name} --out DIR) and use its "
                      "report.json")
    fingerprints = list(fingerprints) if fingerprints is not None else [config.fingerprint()]
    if result.model not in report_names(config):
        raise InvalidInputError(f"{source} is a report of model {result.model!r}, not {model_label(config)!r}: its "
                                f"numbers would be shown on {config.name!r}'s card; {rerun}")
    if result.config_fingerprint is None:
        logger.warning("%s does not record which configuration it evaluated (no config_fingerprint: an older "
                       "robust_mix wrote it); its numbers are shown as %r's", source, config.name)
    elif result.config_fingerprint not in fingerprints:
        raise InvalidInputError(f"{source} evaluated another configuration of {config.name!r} (config fingerprint "
                                f"{result.config_fingerprint}, the model's is {' or '.join(fingerprints)}: an "
                                f"overridden alpha, alpha range, temperature or base, e.g. '{config.name},alpha=0.9'); "
                                f"{rerun}")


def render_all(out_dir: Union[str, Path], reports_dir: Union[str, Path, None] = DEFAULT_REPORTS_DIR
               ) -> tuple[list[Path], dict[str, str]]:
    """Write ``<out_dir>/<name>.md`` for every registered entry with fixed base models.

    A report ``<reports_dir>/<name>.json``, when present, adds its results to that card. Every card is rendered
    before any is written: a report that is refused (truncated, edited, of another model) leaves the folder as it
    was, not half of its cards rewritten.

    Returns:
        The files written, and the skipped entries with the reason.

    Raises:
        robust_mix.validate.InvalidInputError: ``reports_dir`` is not a folder (a typo: every card would be rewritten
            without its results), or a report is not a valid report of its entry; nothing is written.
    """
    if reports_dir is not None and not Path(reports_dir).expanduser().is_dir():
        why = "is a file" if Path(reports_dir).expanduser().exists() else "does not exist"
        raise InvalidInputError(f"the reports folder {str(reports_dir)!r} {why}: no card would get its results, and "
                                f"the cards in {str(out_dir)!r} would be rewritten without them; give the folder of "
                                "<name>.json reports (--reports-dir), or reports_dir=None to render cards without "
                                "results (nothing was written)")
    reports_dir = None if reports_dir is None else Path(reports_dir).expanduser()
    cards, skipped = {}, {}
    for name in list_models():
        config = get_model_config(name)
        if config.standard is None or config.robust is None:
            skipped[name] = "a composition without fixed base models (they are given at load time)"
            continue
        report = Path(reports_dir) / f"{name}.json" if reports_dir is not None else None
        benchmark = report if report is not None and report.is_file() else None
        cards[Path(out_dir) / f"{name}.md"] = zoo_card(name, benchmark, regenerate=REGENERATE_ALL)
    for path, text in cards.items():
        atomic_write_text(path, text)
    return list(cards), skipped
