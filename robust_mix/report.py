"""Reports of a finished benchmark: ``report.json``, RobustBench's model-info JSON, a Markdown
table, and the leaderboard submission files (the "new model" claim and a model-zoo snippet).

Everything is filled from a :class:`~robust_mix.benchmark.BenchmarkResult` and the entry's
:class:`~robust_mix.ModelConfig`; nothing is typed in by hand.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Optional, Union

from robust_mix.config import ModelConfig, ReportedResult
from robust_mix.formatting import (attack_label, evaluation_label, format_eps, interval_heading,
                                   is_standard_autoattack, markdown_code, markdown_row, partial_reasons, percent,
                                   percent_interval, randomness_note)
from robust_mix.io import atomic_write_files
from robust_mix.protocol import canonical_dataset, same_eps
from robust_mix.registry import model_label, report_names
from robust_mix.results import INTERVAL_LEVEL, BenchmarkResult
from robust_mix.validate import check_writable_dir

logger = logging.getLogger(__name__)

#: RobustBench's model-info fields, in the order its JSON files list them.
MODEL_INFO_FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                     "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "external", "footnote",
                     "unreliable")
class PartialEvaluationError(ValueError):
    """A claim was asked for from a report that is not a full leaderboard evaluation (other attack,
    reduced budgets, fewer examples, another data set, threat model or eps than the entry's, or no record of
    the configuration it evaluated)."""


class SubmissionMismatchError(ValueError):
    """The report describes another model or configuration than the entry being submitted."""


def parse_bibtex(citation: str) -> dict[str, str]:
    """The ``key = {value}`` fields of a BibTeX entry (lower-case keys; braces removed)."""
    fields = {}
    for match in re.finditer(r"(\w+)\s*=\s*(\{((?:[^{}]|\{[^{}]*\})*)\}|\"([^\"]*)\"|(\d+))", citation):
        value = next(v for v in match.group(3, 4, 5) if v is not None)
        fields[match.group(1).lower()] = re.sub(r"\s+", " ", value.replace("{", "").replace("}", "")).strip()
    return fields


def _architecture(config: Optional[ModelConfig]) -> str:
    if config is None or config.standard is None or config.robust is None:
        return ""
    parts = [ref.split("/")[-1].removesuffix(".safetensors") for ref in (config.standard.ref, config.robust.ref)]
    return " + ".join(parts) + (" + mixing network" if config.policy is not None else "")


def paper_info(config: Optional[ModelConfig]) -> dict[str, str]:
    """``link``, ``name``, ``authors``, ``venue`` from the entry's BibTeX citation and paper text (the link: the
    citation's ``url`` or ``eprint``, else the first URL of the paper text)."""
    bib = parse_bibtex(config.citation) if config is not None and config.citation else {}
    link = bib.get("url", "")
    if not link and bib.get("eprint"):
        link = f"https://arxiv.org/abs/{bib['eprint']}"
    if not link and config is not None:  # a citation without url: the paper text's link (RobustBench's files all
        found = re.search(r"https?://[^\s;,)]+", config.paper or "")  # have one; its table links the title to it)
        link = found.group(0).rstrip(".") if found else ""
    # BibTeX "Last, First and ..." -> RobustBench's "First Last, ..."
    authors = ", ".join(" ".join(reversed([p.strip() for p in a.split(",", 1)])) if "," in a else a.strip()
                        for a in bib.get("author", "").split(" and ") if a.strip())
    venue = bib.get("journal") or bib.get("booktitle") or ""
    if venue and bib.get("year"):
        venue = f"{venue} {bib['year']}"
    return {"link": link, "name": bib.get("title") or (config.paper if config else ""), "authors": authors,
            "venue": venue}


def in_entry_setting(result: BenchmarkResult, config: ModelConfig) -> bool:
    """True when ``result`` was measured in the entry's own setting: its data set, threat model and eps (the
    leaderboard the entry is registered for, and the setting its reported numbers are for)."""
    return (canonical_dataset(result.dataset) == canonical_dataset(config.dataset)
            and result.threat_model == config.threat_model
            and config.eps is not None and same_eps(result.eps, config.eps))


def _setting(dataset: str, threat_model: str, eps: Optional[float]) -> str:
    return f"{dataset}, {threat_model}, eps {format_eps(eps, threat_model)}"


def reported_for(result: BenchmarkResult, config: Optional[ModelConfig]) -> Optional[ReportedResult]:
    """The authors' reported numbers of the entry (``config.reported``) when ``result`` was measured in the
    setting they are for (the entry's data set, threat model and eps), else ``None``: an L2 run of a Linf
    entry, or a run at another eps, must not be shown beside (or as) numbers reported for another budget."""
    if config is None or config.reported is None:
        return None
    same = in_entry_setting(result, config)
    if not same:
        logger.info("the entry's reported numbers are for %s %s eps %s, this run %s %s eps %s: not shown beside it",
                    config.dataset, config.threat_model, format_eps(config.eps, config.threat_model), result.dataset,
                    result.threat_model, format_eps(result.eps, result.threat_model))
    return config.reported if same else None


def _suite_name(result: BenchmarkResult) -> str:
    """What the non-adaptive suite is called in prose: AutoAttack only when it is the full standard one."""
    return "AutoAttack" if is_standard_autoattack(result) else "the attack stages before the adaptive ones"


def model_info(result: BenchmarkResult, config: Optional[ModelConfig] = None,
               **overrides: Any) -> dict[str, Any]:
    """RobustBench's model-info JSON for the entry (see ``model_info/<dataset>/<threat>/<Name>.json``).

    ``autoattack_acc`` is standard AutoAttack alone; ``external`` is the leaderboard number
    (the minimum over AutoAttack and the adaptive attack) when an adaptive suite ran; the footnote and the claim
    speak of a minimum over both only when both ran (``attack="adaptive"`` runs the adaptive suite alone).
    ``clean_acc`` is clean accuracy on the most images it was measured on (``BenchmarkResult.best_clean``: the
    whole test set when the run measured it, as RobustBench's is), else on the attacked examples.
    ``reported`` is the entry's reported AutoAttack accuracy when the run is in the setting it was reported for
    (:func:`reported_for`), else this run's robust accuracy.
    ``additional_data`` is the entry's (``config.reported.additional_data``, as the leaderboard lists it), else false.
    ``overrides`` replace any field (e.g. ``additional_data=True``, ``footnote="..."``). Every text field is one
    line (runs of white space, line breaks included, become one space).
    """
    paper = paper_info(config)
    reported = reported_for(result, config)
    standard = result.autoattack_accuracy if result.autoattack_accuracy is not None else result.robust_accuracy
    notes = []
    if result.adaptive_accuracy is not None and result.autoattack_accuracy is not None:
        notes.append(f"Robust accuracy {percent(result.robust_accuracy)}% counts an example as robust only if it "
                     f"survives both {_suite_name(result)} ({percent(standard)}%) and the adaptive attack "
                     f"({percent(result.adaptive_accuracy)}%).")
    if result.number_forward_passes > 1:
        notes.insert(0, "It uses an ensemble of networks.")
    if not is_standard_autoattack(result):
        notes.append(f"Robust accuracy measured with {attack_label(result)}, not the full standard AutoAttack.")
    if randomness_note(result):
        notes.append(randomness_note(result))
    reasons = partial_reasons(result)
    if reasons:
        notes.append(f"PARTIAL EVALUATION, not comparable with the leaderboard: {'; '.join(reasons)}.")
    info = {
        "link": paper["link"], "name": paper["name"], "authors": paper["authors"],
        "additional_data": bool(config is not None and config.reported is not None and config.reported.additional_data),
        "number_forward_passes": result.number_forward_passes,
        "dataset": canonical_dataset(result.dataset), "venue": paper["venue"],
        "architecture": _architecture(config), "eps": format_eps(result.eps, result.threat_model),
        "clean_acc": percent(result.best_clean[0]),  # RobustBench's is on the whole test set: when measured
        "reported": f"{reported.autoattack_acc:.2f}" if reported is not None else percent(result.robust_accuracy),
        "autoattack_acc": percent(standard), "external": percent(result.robust_accuracy),
        "footnote": " ".join(notes), "unreliable": False,
    }
    unknown = sorted(set(overrides) - set(MODEL_INFO_FIELDS))
    if unknown:
        raise ValueError(f"unknown model-info field(s) {unknown}; fields: {list(MODEL_INFO_FIELDS)}")
    info.update({k: v for k, v in overrides.items() if v is not None})
    # RobustBench's fields are one line each (its table shows them; claim.md lists them): a paper text or an
    # override with line breaks would start new Markdown blocks (a heading, a list) in the claim
    return {k: " ".join(info[k].split()) if isinstance(info[k], str) else info[k] for k in MODEL_INFO_FIELDS}


def markdown_table(result: BenchmarkResult, config: Optional[ModelConfig] = None) -> str:
    """A Markdown summary: one row of headline numbers (robust accuracy with its 95 % Clopper-Pearson
    interval; clean accuracy on every image it was measured on), then the accuracy after every stage."""
    reported = reported_for(result, config)
    adaptive = result.adaptive_accuracy
    suite = "AutoAttack" if is_standard_autoattack(result) else "attack"  # a table header: short
    full = result.full_clean_examples
    rows = [
        f"Attack: {evaluation_label(result)}.",
        "",
        markdown_row(["model", "dataset", "threat", "eps", "examples", "clean",
                      *([f"clean ({full:,} images)"] if full else []), suite, "adaptive", "robust (min)",
                      interval_heading(INTERVAL_LEVEL), "reported clean / robust"]),
        "|---|---|---|---|---|---|" + ("---|" if full else "") + "---|---|---|---|---|",
        markdown_row([result.model, result.dataset, result.threat_model, format_eps(result.eps, result.threat_model),
                      result.n_examples, percent(result.clean_accuracy),
                      *([percent(result.full_clean_accuracy)] if full else []),
                      percent(result.autoattack_accuracy) if result.autoattack_accuracy is not None else "-",
                      percent(adaptive) if adaptive is not None else "-", percent(result.robust_accuracy),
                      percent_interval(result.robust_interval()),
                      f"{reported.clean_acc:.2f} / {reported.autoattack_acc:.2f}" if reported else "-"]),
        "",
        markdown_row(["stage", "robust accuracy after stage (%)", interval_heading(INTERVAL_LEVEL)]),
        "|---|---|---|",
    ]
    rows += [markdown_row([stage, percent(acc), percent_interval(result.interval(acc))])
             for stage, acc in result.stage_accuracy.items()]
    rows += ["", f"Attack argument {markdown_code(result.attack)}, seed {result.seed}, {result.world_size} "
                 "process(es), "
                 f"{result.wall_time_s:.1f} s ({result.examples_per_second:.2f} examples/s)"
                 + (f", {' / '.join(map(str, result.cpu_threads))} CPU thread(s) per process." if result.cpu_threads
                    else ".")]
    if result.resumed_chunks:
        rows.append(f"Resumed: {result.resumed_chunks} chunk(s) came from an earlier, interrupted session; the "
                    f"wall time includes the {result.resumed_seconds:.1f} s spent on them there.")
    if not result.leaderboard_grade:
        rows.append(f"Budgets overridden: {result.options}; not leaderboard-grade.")
    if randomness_note(result):
        rows.append(randomness_note(result))
    return "\n".join(rows) + "\n"


#: The files :func:`write_report` writes into a folder, as one set: the report, the model info, the Markdown table.
REPORT_FILES = ("report.json", "model_info.json", "report.md")


def write_report(out_dir: Union[str, Path], result: BenchmarkResult,
                 config: Optional[ModelConfig] = None) -> dict[str, Path]:
    """Write ``report.json``, ``model_info.json`` and ``report.md`` (:data:`REPORT_FILES`) into ``out_dir`` as one set
    (:func:`robust_mix.io.atomic_write_files`: an interrupted write leaves the folder's earlier three whole)."""
    written = atomic_write_files(check_writable_dir(out_dir), dict(zip(REPORT_FILES, (
        result.to_json(), json.dumps(model_info(result, config), indent=2) + "\n", markdown_table(result, config)))))
    return {"report": written["report.json"], "model_info": written["model_info.json"],
            "markdown": written["report.md"]}


def _python_comment(text: str) -> str:
    """``text`` as lines of Python comment for ``model_zoo_entry.py``, which RobustBench's maintainers paste into their
    code: every line, however it is broken (``\\r`` ends a Python line as ``\\n`` does), starts with ``# ``, and other
    control characters (a NUL byte makes the file unreadable to Python) are written as escapes, so that no text of a
    config or report (a weights path, a data set, the reasons a run is partial) becomes code there."""
    def shown(line: str) -> str:
        return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in line)

    return "".join(f"# {shown(line)}\n" for line in (text.splitlines() or [""]))


def _weights_location(config: Optional[ModelConfig]) -> str:
    if config is None:
        return "(not recorded)"
    return "; ".join(config.weight_locations()) or "(not recorded)"


def _license(config: Optional[ModelConfig]) -> str:
    if config is None:
        return "(not recorded)"
    licences = [config.license] + [b.license for b in (config.standard, config.robust) if b is not None]
    return ", ".join(dict.fromkeys(x for x in licences if x)) or "(not recorded)"


def check_submission(result: BenchmarkResult, config: Optional[ModelConfig]) -> list[str]:
    """Check that ``result`` can back a leaderboard claim for ``config``; returns why it is partial (among the
    reasons: a run outside the entry's setting, e.g. an L2 run or another eps of a Linf entry, whose numbers the
    claim would put on the entry's leaderboard).

    Raises:
        SubmissionMismatchError: the report is for another model, or for a configuration other than
            the entry's (its config fingerprint differs: e.g. another alpha).
        robust_mix.validate.InvalidInputError: a number in the report is impossible (accuracy outside
            ``[0, 1]``, flags that do not match the accuracies, ...).
    """
    result.check(f"the report for {result.model!r}")
    reasons = partial_reasons(result)
    if config is None:
        return reasons + ["no entry config to check the report against"]
    if result.model not in report_names(config):
        label = model_label(config)
        raise SubmissionMismatchError(
            f"the report is for model {result.model!r}, not {label!r}: submit the report of a benchmark "
            f"of {label!r} (robust-mix benchmark '{label}' --out DIR)")
    if not in_entry_setting(result, config):
        reasons.append(f"measured on {_setting(result.dataset, result.threat_model, result.eps)}, not in the entry's "
                       f"setting ({_setting(config.dataset, config.threat_model, config.eps)}), the leaderboard "
                       "its claim goes to")
    if result.config_fingerprint is None:
        reasons.append("the report does not record which configuration was evaluated (no config_fingerprint: "
                       "written by an older robust_mix); rerun the benchmark to verify it")
    elif result.config_fingerprint != config.fingerprint():
        raise SubmissionMismatchError(
            f"the report's config fingerprint {result.config_fingerprint} does not match {config.name!r} "
            f"({config.fingerprint()}): it evaluated another configuration of the model (overridden alpha, "
            "alpha_range, temperatures, bases or weights); benchmark the entry as registered")
    return reasons


def submission_files(result: BenchmarkResult, config: Optional[ModelConfig] = None, *,
                     allow_partial: bool = False, **info_overrides: Any) -> dict[str, str]:
    """Texts of a leaderboard submission: ``model_info.json``, ``claim.md``, ``model_zoo_entry.py``.

    The report is checked first (:func:`check_submission`); a partial one is written only with
    ``allow_partial``, and then every file says PARTIAL.

    Raises:
        SubmissionMismatchError: the report is for another model or configuration.
        PartialEvaluationError: the report is not a full leaderboard evaluation (other attack than
            standard AutoAttack, reduced budgets, fewer examples, another data set, threat model or eps than the
            entry's, no config fingerprint) and
            ``allow_partial`` is False.
        robust_mix.validate.InvalidInputError: the report holds impossible numbers.
    """
    reasons = check_submission(result, config)
    if reasons and not allow_partial:
        raise PartialEvaluationError("refusing to write a leaderboard claim: " + "; ".join(reasons)
                                     + ". Run the full benchmark, or pass --allow-partial to write marked drafts.")
    info = model_info(result, config, **info_overrides)
    banner = ("PARTIAL EVALUATION, NOT A LEADERBOARD CLAIM: " + "; ".join(reasons) + ".\n\n"
              if reasons else "")
    unstated = [r for r in reasons if r not in info["footnote"]]  # model_info states the evaluation's own
    if unstated:
        info["footnote"] = (info["footnote"] + " " if info["footnote"] else "") + "PARTIAL EVALUATION: " + \
            "; ".join(unstated) + "."
    name = model_label(config) if config is not None else result.model
    evaluation = (f"pyautoattack {result.versions.get('pyautoattack', '?')}: {attack_label(result)} "
                  f"(attack argument `{result.attack}`), seed {result.seed}, "
                  f"{result.n_examples} test examples, robust_mix benchmark harness "
                  f"{result.versions.get('robust_mix', '?')}")
    claim = banner + "\n".join([
        f"# New model: {name}", "",
        f"- Paper: {info['name']} ({info['link'] or 'no link recorded'}), {info['authors']}, {info['venue']}",
        f"- Architecture: {info['architecture']}",
        f"- Threat model: {result.threat_model}",
        f"- Epsilon: {info['eps']}",
        f"- Dataset: {info['dataset']}",
        f"- Clean accuracy: {info['clean_acc']}% (on {result.best_clean[1]:,} test images)",
        f"- Robust accuracy ({'AutoAttack' if is_standard_autoattack(result) else attack_label(result)}): "
        f"{info['autoattack_acc']}%",
        *([f"- Robust accuracy ({_suite_name(result)} and adaptive attack, minimum): {info['external']}%"]
          if result.adaptive_accuracy is not None and result.autoattack_accuracy is not None else []),
        (f"- Reported by the authors: {info['reported']}%" if reported_for(result, config) is not None
         or info_overrides.get("reported") is not None else "- Reported by the authors: nothing for this setting (model_info.json's "
         "'reported' repeats this evaluation's robust accuracy)"),
        f"- Additional data: {'yes' if info['additional_data'] else 'no'}",
        f"- Forward passes per prediction: {info['number_forward_passes']}",
        f"- Evaluation method: {evaluation}",
        f"- Checkpoint location: {_weights_location(config)}",
        f"- Licence: {_license(config)}",
        *([f"- Footnote: {info['footnote']}"] if info["footnote"] else []),
    ]) + "\n"
    threat = {"Linf": "linf", "L2": "l2", "L1": "l1"}.get(result.threat_model, result.threat_model.lower())
    snippet = (_python_comment(banner.strip()) if banner else "") + _python_comment(
        f"Add to robustbench/model_zoo/{info['dataset']}.py, inside the `{threat}` OrderedDict.\n"
        f"The composite is built by robust_mix (pip install robust-mix); weights: {_weights_location(config)}.") + (
        f"({name!r}, {{\n"
        f"    'model': lambda: __import__('robust_mix').load_model({name!r}),\n"
        f"    'gdrive_id': [],\n"
        f"}}),\n")
    return {"model_info.json": json.dumps(info, indent=2) + "\n", "claim.md": claim, "model_zoo_entry.py": snippet}


def write_submission(out_dir: Union[str, Path], result: BenchmarkResult, config: Optional[ModelConfig] = None,
                     *, allow_partial: bool = False, **info_overrides: Any) -> dict[str, Path]:
    """Write :func:`submission_files` into ``out_dir`` as one set (:func:`robust_mix.io.atomic_write_files`: an
    interrupted write leaves the folder's earlier submission whole); returns the paths.

    Nothing is written unless the report passes :func:`check_submission` (see :func:`submission_files`).
    """
    files = submission_files(result, config, allow_partial=allow_partial, **info_overrides)
    return atomic_write_files(check_writable_dir(out_dir, "submission folder"), files)
