"""Reports and leaderboard submission files (robust_mix.report) and the ``submit`` command."""
from __future__ import annotations

import ast
import dataclasses
import json
import re

import pytest
import torch

import robust_mix
from robust_mix.protocol import STANDARD_STAGES
from robust_mix.validate import InvalidInputError
from robust_mix.benchmark import BenchmarkResult, benchmark
from robust_mix.cli import main
from robust_mix.formatting import format_eps
from robust_mix.report import (MODEL_INFO_FIELDS, PartialEvaluationError, markdown_table, model_info,
                               parse_bibtex, submission_files, write_report)
from test_benchmark import EPS, FAST, fmnist, tiny_config, tiny_mixed

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def result() -> BenchmarkResult:
    x, y = fmnist(8)
    return benchmark(tiny_mixed(), images=x, labels=y, eps=EPS, batch_size=8, attack="apgd-ce", adaptive=True,
                     options=FAST, device="cpu")


def full_size(result: BenchmarkResult, **kw) -> BenchmarkResult:
    """The same numbers as if they came from a leaderboard-size run of the standard suite at full budgets
    (flags repeated to 10,000 examples; for claim tests)."""
    reps = 10_000 // result.n_examples
    robust = result.stage_accuracy["apgd-ce"]
    stages = {**{s: robust for s in STANDARD_STAGES},
              **{s: a for s, a in result.stage_accuracy.items() if s.startswith("adaptive")}}
    return dataclasses.replace(result, **{"n_examples": 10_000, "options": {}, "attack": "standard+adaptive",
                                          "images_given": False, **kw},
                               clean_flags=result.clean_flags * reps, robust_flags=result.robust_flags * reps,
                               suite_flags={k: v * reps for k, v in result.suite_flags.items()},
                               stage_accuracy=stages)


def test_eps_and_bibtex_formats():
    assert format_eps(8 / 255) == "8/255" and format_eps(4 / 255) == "4/255" and format_eps(0.5) == "0.5"
    bib = parse_bibtex(tiny_config().citation)
    assert bib["title"] == "A Tiny Mixture" and bib["year"] == "2024" and bib["url"] == "https://example.org/tiny"


def test_model_info_matches_robustbench_schema(result):
    info = model_info(result, tiny_config())
    assert tuple(info) == MODEL_INFO_FIELDS
    assert info["clean_acc"] == f"{100 * result.clean_accuracy:.2f}"
    assert info["autoattack_acc"] == f"{100 * result.autoattack_accuracy:.2f}"
    assert info["external"] == f"{100 * result.robust_accuracy:.2f}"
    assert info["reported"] == "20.00" and info["eps"] == "0.1" and info["dataset"] == "fashion-mnist"
    assert info["number_forward_passes"] == 2 and info["unreliable"] is False
    assert info["authors"] == "Jane Doe, Rick Roe" and info["venue"] == "Test Journal 2024"
    assert info["link"] == "https://example.org/tiny" and info["name"] == "A Tiny Mixture"
    assert "adaptive attack" in info["footnote"] and "not comparable" in info["footnote"]
    assert model_info(result, tiny_config(), additional_data=True)["additional_data"] is True
    for spelling in ("fmnist", "Fashion_MNIST"):  # a report's other spellings name RobustBench's one data set
        assert model_info(dataclasses.replace(result, dataset=spelling), tiny_config())["dataset"] == "fashion-mnist"
    with pytest.raises(ValueError, match="unknown model-info"):
        model_info(result, tiny_config(), clean=1)


def test_model_info_states_the_entry_s_additional_data(result):
    """A submission says whether the model used data beyond the training split as the entry records it: the paper
    entries' standard bases were pre-trained on ImageNet-21k (RobustBench lists additional data; it said false)."""
    assert model_info(result, tiny_config())["additional_data"] is False
    paper = robust_mix.get_model_config("cifar100-adasmooth")
    assert paper.reported.additional_data is True
    assert model_info(result, paper)["additional_data"] is True
    assert model_info(result, paper, additional_data=False)["additional_data"] is False
    with pytest.raises(InvalidInputError, match="additional_data"):
        robust_mix.config.ModelConfig.from_dict({**paper.to_dict(), "reported": {
            **paper.to_dict()["reported"], "additional_data": "yes"}})


def test_write_report_and_markdown(result, tmp_path):
    paths = write_report(tmp_path, result, tiny_config())
    assert BenchmarkResult.from_json(paths["report"]) == result
    assert json.loads(paths["model_info"].read_text())["clean_acc"] == f"{100 * result.clean_accuracy:.2f}"
    table = markdown_table(result, tiny_config())
    assert table == paths["markdown"].read_text()
    assert f"| {100 * result.robust_accuracy:.2f} |" in table and "| adaptive-apgd-t |" in table
    assert "70.00 / 20.00" in table and "not leaderboard-grade" in table


def test_report_files_write_an_l2_budget_as_a_number(result, tmp_path):
    l2 = dataclasses.replace(result, threat_model="L2", eps=1.0)
    paths = write_report(tmp_path, l2)
    assert json.loads(paths["model_info"].read_text())["eps"] == "1"
    assert "| L2 | 1 |" in paths["markdown"].read_text() and "255" not in paths["markdown"].read_text()


@pytest.mark.parametrize("setting", [dict(threat_model="L2", eps=1.0), dict(eps=0.05), dict(dataset="cifar10")])
def test_reported_numbers_of_another_setting_are_not_shown_beside_a_run(result, setting):
    """The entry's Linf eps 0.1 numbers (70.00 / 20.00) were shown as 'reported' beside an L2 run, and written
    into model_info.json's 'reported' field."""
    other = dataclasses.replace(result, **setting)
    assert "70.00 / 20.00" not in markdown_table(other, tiny_config())
    assert model_info(other, tiny_config())["reported"] == f"{100 * other.robust_accuracy:.2f}"
    assert model_info(result, tiny_config())["reported"] == "20.00"
    claim = submission_files(full_size(other), tiny_config(), allow_partial=True)["claim.md"]
    assert "- Reported by the authors: nothing for this setting" in claim
    assert "- Reported by the authors: 20.00%" in submission_files(full_size(result), tiny_config())["claim.md"]


def test_claim_refuses_partial_reports_unless_allowed(result):
    with pytest.raises(PartialEvaluationError, match="not the standard AutoAttack suite.*n_iter=8.*"
                                                     "8 of the leaderboard's 10,000"):
        submission_files(result, tiny_config())
    files = submission_files(result, tiny_config(), allow_partial=True)
    assert files["claim.md"].startswith("PARTIAL EVALUATION")
    assert "PARTIAL EVALUATION" in json.loads(files["model_info.json"])["footnote"]
    assert files["model_zoo_entry.py"].startswith("# PARTIAL EVALUATION")


def test_an_eps_given_in_float32_is_the_entry_s_budget_and_another_budget_is_not(result):
    """An eps given as ``np.float32(0.1)`` or a float32 tensor is recorded as 0.10000000149...: the entry's
    reported numbers were hidden beside it and its claim called partial, while the leaderboard pages took it as
    0.1 (three tolerances for one question)."""
    import numpy as np

    from robust_mix.protocol import same_eps

    float32 = dataclasses.replace(result, eps=float(np.float32(0.1)))
    assert float32.eps != 0.1 and same_eps(float32.eps, 0.1) and not same_eps(0.1, 0.1 * (1 + 1e-4))
    assert model_info(float32, tiny_config())["reported"] == "20.00"
    assert "- Reported by the authors: 20.00%" in submission_files(full_size(float32), tiny_config())["claim.md"]
    with pytest.raises(PartialEvaluationError, match="not in the entry's setting"):
        submission_files(full_size(dataclasses.replace(result, eps=0.1 * (1 + 1e-4))), tiny_config())


@pytest.mark.parametrize("setting, match", [
    (dict(threat_model="L2", eps=0.5), r"measured on fashion-mnist, L2, eps 0\.5, not in the entry's setting "
                                       r"\(fashion-mnist, Linf, eps 0\.1\)"),
    (dict(eps=0.05), r"measured on fashion-mnist, Linf, eps 0\.05, not in the entry's setting"),
    (dict(dataset="cifar10"), r"measured on cifar10, Linf, eps 0\.1, not in the entry's setting"),
])
def test_a_claim_outside_the_entry_s_setting_is_refused_unless_partial_is_allowed(result, tmp_path, capsys, setting,
                                                                                  match):
    """An L2 run (or another eps, another data set) of a Linf eps 0.1 entry, at full budgets on 10,000 images,
    was written as a full claim for the entry's leaderboard: the setting was never compared with the entry's."""
    other = full_size(result, **setting)
    with pytest.raises(PartialEvaluationError, match=match):
        submission_files(other, tiny_config())
    files = submission_files(other, tiny_config(), allow_partial=True)
    assert files["claim.md"].startswith("PARTIAL EVALUATION") and "not in the entry's setting" in files["claim.md"]
    assert "not in the entry's setting" in json.loads(files["model_info.json"])["footnote"]
    config_path, report = tmp_path / "tiny.json", tmp_path / "report.json"
    tiny_config().save(config_path)
    other.save(report)
    assert main(["submit", str(config_path), "--report", str(report), "--out", str(tmp_path / "out")]) == 3
    assert "not in the entry's setting" in capsys.readouterr().err and not (tmp_path / "out").exists()
    submission_files(full_size(result), tiny_config())  # the entry's own setting is a claim


def test_the_adaptive_suite_alone_is_not_called_a_minimum_over_two(result):
    """attack='adaptive' runs the adaptive suite alone: the footnote said the robust accuracy counts an example
    only if it "survives both the attack stages before the adaptive ones" and the adaptive attack, and the claim
    listed a minimum over both, though no stage ran before the adaptive ones."""
    adaptive = {k: v for k, v in result.stage_accuracy.items() if k.startswith("adaptive")}
    alone = dataclasses.replace(result, attack="adaptive", stage_accuracy=adaptive,
                                suite_accuracy={"adaptive": result.suite_accuracy["adaptive"]},
                                suite_flags={"adaptive": result.suite_flags["adaptive"]},
                                robust_flags=result.suite_flags["adaptive"],
                                robust_accuracy=result.suite_accuracy["adaptive"])
    alone.check()
    footnote = model_info(alone, tiny_config())["footnote"]
    assert "survives both" not in footnote and "before the adaptive ones" not in footnote
    assert "Robust accuracy measured with adaptive APGD-CE" in footnote
    claim = submission_files(alone, tiny_config(), allow_partial=True)["claim.md"]
    assert "minimum" not in claim and "before the adaptive ones" not in claim
    assert "survives both AutoAttack" in model_info(full_size(result), tiny_config())["footnote"]


def test_full_claim_has_every_item(result):
    files = submission_files(full_size(result), tiny_config(license="MIT"))
    claim = files["claim.md"]
    assert "PARTIAL" not in claim
    for item in ("Paper: A Tiny Mixture", "Architecture:", "Threat model: Linf", "Epsilon: 0.1",
                 f"Clean accuracy: {100 * result.clean_accuracy:.2f}%", "Robust accuracy (AutoAttack):",
                 "Additional data: no", "Evaluation method: pyautoattack", "Checkpoint location:", "Licence: MIT"):
        assert item in claim, item
    snippet = files["model_zoo_entry.py"]
    compile(snippet, "model_zoo_entry.py", "exec")
    assert "load_model('tiny-template-mix')" in snippet and "fashion-mnist.py" in snippet


def test_submit_command(result, tmp_path, capsys):
    config_path = tmp_path / "tiny.json"
    tiny_config().save(config_path)
    report = tmp_path / "report.json"
    result.save(report)
    out = tmp_path / "submission"
    assert main(["submit", str(config_path), "--report", str(report), "--out", str(out)]) == 3
    assert "refusing" in capsys.readouterr().err and not out.exists()
    assert main(["submit", str(config_path), "--report", str(report), "--out", str(out), "--allow-partial",
                 "--additional-data", "--venue", "ICML 2099"]) == 0
    info = json.loads((out / "model_info.json").read_text())
    assert info["additional_data"] is True and info["venue"] == "ICML 2099"
    assert (out / "claim.md").is_file() and (out / "model_zoo_entry.py").is_file()


def test_benchmark_command_with_adaptive_shows_both_numbers(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["benchmark", "test_benchmark:tiny_mixed", "--n-examples", "4", "--batch-size", "4",
                 "--attack", "apgd-ce", "--adaptive", "--n-iter", "4", "--n-target-classes", "2",
                 "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| attack | adaptive | robust (min) |" in table  # not the standard suite: not called AutoAttack
    assert "Attack: APGD-CE (4 iter) + adaptive APGD-CE (4 iter) + adaptive APGD-T (4 iter, 2 targets), partial:" \
        in table
    report = BenchmarkResult.from_json(out / "report.json")
    assert report.attack == "apgd-ce+adaptive" and report.arguments["adaptive"] is True
    assert report.adaptive_accuracy is not None and report.autoattack_accuracy is not None
    info = json.loads((out / "model_info.json").read_text())
    assert info["external"] == f"{100 * report.robust_accuracy:.2f}"
    assert report.command.startswith("robust-mix benchmark test_benchmark:tiny_mixed --n-examples 4")


def test_harness_report_feeds_the_model_card(result, tmp_path):
    """The card renderer reads the harness's own report.json, command included."""
    from robust_mix.cards import zoo_card

    path = tmp_path / "report.json"
    entry = robust_mix.get_model_config("fmnist-robust")
    dataclasses.replace(result, command="robust-mix benchmark toy --n-examples 8", model="fmnist-robust",
                        config_fingerprint=entry.fingerprint()).save(path)
    card = zoo_card("fmnist-robust", path)
    assert "robust-mix benchmark toy --n-examples 8" in card and "`report.json`" in card
    assert f"{100 * result.clean_accuracy:.2f}" in card


def test_a_card_is_tagged_with_the_setting_its_benchmark_was_measured_in(result):
    """A card of a Linf entry with an L2 report was tagged 'Linf' beside the L2 run's 'eps-0.5' (the threat model
    came from the entry, the budget from the report)."""
    from robust_mix.cards import card_metadata

    entry = robust_mix.get_model_config("fmnist-robust")  # Linf, eps 0.1
    l2 = dataclasses.replace(result, threat_model="L2", eps=0.5)
    tags = card_metadata(entry, l2).tags
    assert {"fashion-mnist", "L2", "eps-0.5"} <= set(tags) and "Linf" not in tags
    assert {"Linf", "eps-0.1"} <= set(card_metadata(entry).tags)


@pytest.mark.parametrize("changes, match", [
    ({}, "a report of model 'tiny-template-mix', not 'fmnist-robust'"),
    ({"model": "fmnist-robust"}, "evaluated another configuration of 'fmnist-robust'"),
])
def test_a_card_refuses_the_report_of_another_model_or_configuration(result, tmp_path, capsys, changes, match):
    """`robust-mix card fmnist-robust --benchmark runs/demo/fmnist-robust-alpha0.9/report.json` showed the
    alpha 0.9 mix's numbers on the robust base's card (and another model's report was taken as well)."""
    from robust_mix.cards import zoo_card

    path = tmp_path / "report.json"
    dataclasses.replace(result, **changes).save(path)
    with pytest.raises(InvalidInputError, match=match):
        zoo_card("fmnist-robust", path)
    assert main(["card", "fmnist-robust", "--benchmark", str(path), "--out", str(tmp_path / "card.md")]) == 2
    assert match.split("'")[0] in capsys.readouterr().err and not (tmp_path / "card.md").exists()


def test_odd_names_cannot_break_the_markdown_table(result):
    odd = dataclasses.replace(result, model="evil|name\nnext", dataset="fashion|mnist", attack="apgd-ce`+|x")
    table = markdown_table(odd)
    header, rule, row = table.splitlines()[2:5]
    assert row.startswith("| evil\\|name next | fashion\\|mnist |")
    unescaped = lambda line: len(line.replace("\\|", "").split("|"))  # noqa: E731
    assert unescaped(row) == unescaped(header) == unescaped(rule)
    assert "Attack argument ``apgd-ce`+|x``," in table  # a code span that holds the backtick


def test_markup_in_a_name_stays_text_in_the_markdown_table(result):
    """A model or data set name holding HTML went into report.md's table as raw HTML, which Markdown viewers
    render (a ``<script>`` ran, a ``<b>`` bolded the rest)."""
    odd = dataclasses.replace(result, model='<script>alert("x")</script>', dataset="a & <b>b")
    row = markdown_table(odd).splitlines()[4]
    assert "<script>" not in row and "<b>" not in row
    assert row.startswith('| &lt;script&gt;alert("x")&lt;/script&gt; | a &amp; &lt;b&gt;b |')


def test_images_passed_by_the_caller_never_back_a_leaderboard_claim(result):
    """A report of images passed to benchmark() carried the model's data set name only: 10,000 arbitrary images
    (the training split, corrupted ones) were submitted as a full leaderboard evaluation."""
    assert result.images_given and BenchmarkResult.from_dict(result.to_dict()).images_given
    with pytest.raises(PartialEvaluationError, match="images passed to benchmark\\(\\), not fashion-mnist's test "
                                                     "split loaded by the harness"):
        submission_files(full_size(result, images_given=True), tiny_config(license="MIT"))
    legacy = {k: v for k, v in full_size(result).to_dict().items() if k != "images_given"}
    assert "PARTIAL" not in submission_files(BenchmarkResult.from_dict(legacy), tiny_config(license="MIT"))["claim.md"]
    with pytest.raises(InvalidInputError, match="images_given must be true or false, got 'no'"):
        BenchmarkResult.from_dict({**result.to_dict(), "images_given": "no"})


@pytest.mark.parametrize("reported, match", [
    ({"clean_acc": 0.9, "autoattack_acc": 0.4}, r"these read as fractions; write 90 and 40"),
    ({"clean_acc": 40.0, "autoattack_acc": 90.0}, r"autoattack_acc 90.0 exceeds reported.clean_acc 40.0"),
    ({"clean_acc": 185.2, "autoattack_acc": 38.7}, r"clean_acc must be a finite number in \[0, 100\]"),
    ({"clean_acc": 85.2, "autoattack_acc": 38.7, "n_examples": -5}, r"n_examples must be a positive integer"),
])
def test_reported_numbers_that_are_not_percentages_are_refused_when_the_config_is_read(tmp_path, capsys, reported,
                                                                                       match):
    """A config.json whose reported numbers were fractions (0.9, 0.4) was read as is: model_info.json's 'reported'
    and the claim said 0.40 %, the card '0.90 % clean'; swapped or out-of-range numbers passed as well."""
    data = tiny_config().to_dict()
    data["reported"] = {"n_examples": 10_000, **reported}
    (tmp_path / "entry.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        robust_mix.ModelConfig.load(tmp_path / "entry.json")
    assert main(["submit", str(tmp_path / "entry.json"), "--report", str(tmp_path / "missing.json"),
                 "--out", str(tmp_path / "sub")]) == 2
    assert re.search(match, capsys.readouterr().err) and not (tmp_path / "sub").exists()


def test_line_breaks_in_paper_texts_stay_inside_their_claim_item(result):
    """A config's paper text (the model-info 'name' when no BibTeX title is given) or an override with line breaks
    went into model_info.json and claim.md as is: a line '# ...' became a heading of the claim, '- ...' an item."""
    config = tiny_config(citation="", paper="A Tiny Mixture\n# Injected heading\n- injected item")
    files = submission_files(full_size(result), config, footnote="first line\n\nsecond paragraph")
    info = json.loads(files["model_info.json"])
    assert info["name"] == "A Tiny Mixture # Injected heading - injected item"
    assert info["footnote"] == "first line second paragraph"
    lines = files["claim.md"].splitlines()
    assert not any(line.startswith(("# Injected", "- injected", "second")) for line in lines)
    assert "- Paper: A Tiny Mixture # Injected heading - injected item (no link recorded)" in files["claim.md"]


@pytest.mark.parametrize("group, change, match", [
    ("apgd", {"n_restarts": "5"}, r"attack_settings\['apgd'\]\['n_restarts'\] must be an integer"),
    ("apgd-t", {"n_target_classes": 0}, r"attack_settings\['apgd-t'\]\['n_target_classes'\] must be a positive"),
    ("square", 5000, r"attack_settings\['square'\] must be an object"),
])
def test_attack_budgets_the_labels_name_are_checked_when_a_report_is_read(result, tmp_path, group, change, match):
    """A report.json whose attack_settings held a budget as text ("n_restarts": "5") was read, then the attack
    label crashed with a TypeError (report.md, the card, the claim); a 0 or a non-object went into labels as is."""
    data = result.to_dict()
    settings = {**data["attack_settings"],
                group: {**data["attack_settings"][group], **change} if isinstance(change, dict) else change}
    (tmp_path / "report.json").write_text(json.dumps({**data, "attack_settings": settings}))
    with pytest.raises(InvalidInputError, match=match):
        BenchmarkResult.from_json(tmp_path / "report.json")


def test_model_info_clean_accuracy_is_the_whole_test_set_when_measured(result):
    """A run that measured clean accuracy on all 10,000 test images (--clean-examples) still wrote model_info.json's
    clean_acc (RobustBench's whole-test-set figure) and the claim's from the attacked examples only, while the site
    and the card showed the whole-set one."""
    full = dataclasses.replace(full_size(result), full_clean_accuracy=0.9123, full_clean_examples=10_000)
    files = submission_files(full, tiny_config(), allow_partial=True)
    assert json.loads(files["model_info.json"])["clean_acc"] == "91.23"
    assert "- Clean accuracy: 91.23% (on 10,000 test images)" in files["claim.md"]
    attacked = model_info(full_size(result), tiny_config())["clean_acc"]
    assert attacked == f"{100 * full_size(result).clean_accuracy:.2f}"  # nothing else measured: the attacked ones


@pytest.mark.parametrize("accuracy, names", [(85.0, "it looks like a percentage; robust_mix stores fractions: 0.85"),
                                             (-0.1, "got -0.1"), (float("nan"), "got nan")])
def test_interval_of_an_accuracy_that_is_no_fraction_names_it(result, accuracy, names):
    """result.interval(85.0) (a percentage) was refused as '8500 successes out of 8', NaN as a float conversion."""
    with pytest.raises(robust_mix.validate.InvalidInputError, match="accuracy must be a finite number in") as info:
        result.interval(accuracy)
    assert names in str(info.value)
    assert result.interval(0.5) == result.interval(4 / 8)


@pytest.mark.parametrize("entry, robustbench_id, link", [
    ("cifar10-adasmooth", "Bai2023Improving_edm", "https://arxiv.org/abs/2301.12554"),
    ("cifar10-mixednuts", "Bai2024MixedNUTS", "https://arxiv.org/abs/2402.02263")])
def test_model_info_reads_with_robustbench_s_own_reader(result, tmp_path, monkeypatch, capsys, entry, robustbench_id,
                                                        link):
    """RobustBench's leaderboard links each paper title to the file's ``link``: the zoo's AdaSmooth citation has no
    url, so its model_info.json had ``"link": ""`` (the table showed ``[title]()``), where the paper text names it."""
    from robustbench.utils import list_available_models

    config = robust_mix.get_model_config(entry)
    run = dataclasses.replace(full_size(result), model=entry, dataset="cifar10", eps=8 / 255)
    folder = tmp_path / "model_info" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    written = write_report(tmp_path / "out", run, config)["model_info"]
    (folder / f"{robustbench_id}.json").write_text(written.read_text())
    monkeypatch.chdir(tmp_path)  # RobustBench reads ./model_info/<dataset>/<threat model>/<id>.json
    list_available_models("cifar10", "Linf")
    table = capsys.readouterr().out
    info = json.loads(written.read_text())
    assert info["link"] == link and isinstance(info["clean_acc"], str) and info["eps"] == "8/255"
    row = next(line for line in table.splitlines() if robustbench_id in line)
    assert f"*[{info['name']}]({link})*" in row
    assert f"{float(info['clean_acc']):.2f}%" in row and f"{float(info['external']):.2f}%" in row


@pytest.mark.parametrize("breaks", ["\n", "\r", "\r\n", "\u2028", "\x00"])
def test_text_of_a_config_never_becomes_code_of_the_model_zoo_entry(result, breaks):
    """model_zoo_entry.py is pasted into RobustBench's code: a weights path holding a line break (a config .json
    from someone else, and a report naming its fingerprint) put its second line there as code."""
    from robust_mix.config import WeightsConfig

    config = tiny_config(weights=WeightsConfig(file=f"policy.safetensors{breaks}import os; os.system('rm -rf ~')"))
    evaluated = full_size(result, config_fingerprint=config.fingerprint())
    snippet = submission_files(evaluated, config, allow_partial=True)["model_zoo_entry.py"]
    tree = ast.parse(snippet)  # a NUL byte made it unreadable as Python
    assert [type(node.value).__name__ for node in tree.body] == ["Tuple"]  # the entry, and nothing else
    assert all(line.startswith("# ") for line in snippet.splitlines()[:tree.body[0].lineno - 1])
    assert "import os; os.system('rm -rf ~')" in snippet  # kept, as a comment
