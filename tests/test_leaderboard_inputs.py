"""Finding and checking a site's inputs (robust_mix.leaderboard.inputs)."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from robust_mix.leaderboard.inputs import Board, check_report, choose_board, collect
from robust_mix.stats import clopper_pearson
from robust_mix.sweep import SweepPoint, write_sweep
from leaderboard_runs import tiny_result, with_flags, write_run


def test_reports_are_found_in_folders_and_read_with_their_numbers(tmp_path):
    write_run(tmp_path / "runs" / "a")
    write_run(tmp_path / "runs" / "deep" / "b", model="other-model")
    inputs = collect([tmp_path / "runs"])
    assert [e.label for e in inputs.evaluations] == ["a", "b"] and inputs.rejected == []
    e = inputs.evaluations[0]
    result = tiny_result()
    assert e.result == result and e.slug == "a"
    assert e.robust_successes == sum(result.robust_flags)
    assert e.interval() == clopper_pearson(sum(result.robust_flags), result.n_examples)
    assert e.model_info["clean_acc"] == f"{100 * result.clean_accuracy:.2f}"  # model_info.json beside it
    assert e.additional_data is False
    assert e.partial and "partial: 10 of 10,000 examples" in e.caveats()
    assert any("attack budgets changed from the protocol's" in c for c in e.caveats())
    assert any("not standard AutoAttack" in c for c in e.caveats())


def test_a_full_standard_evaluation_has_no_caveats(tmp_path):
    flags = [True] * 10_000
    result = with_flags(tiny_result(), flags, [i % 2 == 0 for i in range(10_000)], options={},
                        attack="standard+adaptive", images_given=False)
    write_run(tmp_path / "full", result)
    (e,) = collect([tmp_path]).evaluations
    assert not e.partial and e.caveats() == []


def test_images_passed_by_the_caller_are_a_caveat(tmp_path):
    """A report of benchmark(images=...) on 10,000 arbitrary images showed as a full leaderboard row with no
    caveat (submit refuses it as partial)."""
    flags = [True] * 10_000
    result = with_flags(tiny_result(), flags, flags, options={}, attack="standard", images_given=True)
    write_run(tmp_path / "given", result)
    (e,) = collect([tmp_path]).evaluations
    assert e.caveats() == ["images passed to benchmark(), not fashion-mnist's test split"]


@pytest.mark.parametrize("change", [dict(options=None), dict(options={"n_restarts": 2}), dict(images_given=True),
                                    dict(attack="apgd-ce"), dict(dataset="mnist-like"), dict(randomized=True)])
def test_the_site_s_caveats_and_the_reports_partial_reasons_are_one_rule(change):
    """The site's caveats were a second copy of the partial-evaluation rule: a report without recorded budgets
    (options None), which report.md and submit call partial, showed on the site as a full evaluation."""
    from robust_mix.formatting import partial_reasons
    from robust_mix.leaderboard.inputs import Evaluation

    flags = [True] * 10_000
    base = dict(options={}, attack="standard", images_given=False)
    result = dataclasses.replace(with_flags(tiny_result(), flags, flags, **{**base, **{k: v for k, v in change.items()
                                                                                       if k in base}}),
                                 **{k: v for k, v in change.items() if k not in base})
    e = Evaluation("m", "m", None, result, "")
    assert len(e.caveats()) == len(partial_reasons(result)) == 1


@pytest.mark.parametrize("attack, caveat", [
    ("rand", "attack rand, not standard AutoAttack"),
    ("apgd-ce,apgd-t,fab-t,square", None),  # the standard suite, listed stage by stage
    ("apgd-ce,apgd-t,fab-t,square+adaptive", None),
])
def test_the_attack_caveat_follows_the_stages_that_ran(tmp_path, attack, caveat):
    """The standard suite listed stage by stage ('apgd-ce,apgd-t,fab-t,square', what pyautoattack's standard
    version runs, labelled AutoAttack everywhere else) was said not to be standard AutoAttack on the site."""
    flags = [True] * 10_000
    result = with_flags(tiny_result(), flags, [i % 2 == 0 for i in range(10_000)], options={}, attack=attack,
                        images_given=False)
    write_run(tmp_path / "full", result)
    (e,) = collect([tmp_path]).evaluations
    assert e.caveats() == ([caveat] if caveat else [])


@pytest.mark.parametrize("change,match", [
    (dict(robust_accuracy=0.95), "robust_accuracy is 0.95 but its robust_flags give"),
    (dict(clean_flags=[True] * 3), "clean_flags must hold one true/false flag per example"),
    (dict(threat_model="Linfinity"), "threat_model must be one of"),
    (dict(eps=-1.0), "eps must be a non-negative number"),
    (dict(n_examples=0), "n_examples must be a positive integer"),
])
def test_check_report_names_the_field_that_disagrees(change, match):
    with pytest.raises(ValueError, match=match):
        check_report(dataclasses.replace(tiny_result(), **change))
    check_report(tiny_result())


def test_bad_files_are_rejected_with_reasons(tmp_path):
    good = write_run(tmp_path / "good")
    text = good.read_text()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "report.json").write_text(text[: len(text) // 2])
    data = json.loads(text)
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "report.json").write_text(json.dumps({**data, "format_version": 7,
                                                                 "versions": {"robust_mix": "9.0.0"}}))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "empty").mkdir()
    inputs = collect([tmp_path / "good", tmp_path / "cut", tmp_path / "future", tmp_path / "notes.txt",
                      tmp_path / "list.json", tmp_path / "empty", tmp_path / "missing"])
    assert [e.label for e in inputs.evaluations] == ["good"]
    reasons = {r.path.parent.name if r.path.name == "report.json" else r.path.name: r.reason
               for r in inputs.rejected}
    assert "truncated JSON" in reasons["cut"] and "rerun the command" in reasons["cut"]
    assert "format_version" in reasons["future"] and "written by robust_mix 9.0.0" in reasons["future"]
    assert "not a JSON file" in reasons["notes.txt"]
    assert "expected a JSON object, got list" in reasons["list.json"]
    assert "no report.json" in reasons["empty"] and reasons["missing"] == "no such file or folder"


def test_choose_board_keeps_the_most_common_board_and_lists_the_others(tmp_path):
    write_run(tmp_path / "f1")
    write_run(tmp_path / "f2", seed=1)  # another run (an exact copy of f1 would be left out as one)
    write_run(tmp_path / "c1", dataset="cifar10", eps=8 / 255)
    write_run(tmp_path / "f3", eps=0.3)
    board, kept = choose_board(collect([tmp_path]))
    assert board == Board("fashion-mnist", "Linf", 0.1)
    assert sorted(e.label for e in kept.evaluations) == ["f1", "f2"]
    reasons = {r.path.parent.name: r.reason for r in kept.rejected}
    assert "cifar10 Linf eps 8/255" in reasons["c1"] and "this site is fashion-mnist Linf eps 0.1" in reasons["c1"]
    assert "eps 0.3" in reasons["f3"]
    board, kept = choose_board(collect([tmp_path]), dataset="CIFAR10")
    assert board == Board("cifar10", "Linf", 8 / 255) and [e.label for e in kept.evaluations] == ["c1"]
    assert "the board asked for" in kept.rejected[0].reason


def test_sweeps_attach_to_reports_of_their_model_on_the_same_board(tmp_path):
    write_run(tmp_path / "run")
    points = [SweepPoint(0.0, 0.9, 0.0, "apgd-ce", 10, 1.0), SweepPoint(1.0, 0.7, 0.5, "apgd-ce", 10, 1.0)]
    model = tiny_result().model
    write_sweep(points, tmp_path / "same", metadata={"model": model, "attack": "apgd-ce",
                                                     "arguments": {"dataset": "fashion-mnist", "eps": 0.1}})
    write_sweep(points, tmp_path / "other-eps", metadata={"model": model, "arguments": {"eps": 0.3,
                                                          "dataset": "fashion-mnist", "threat_model": "Linf"}})
    write_sweep(points, tmp_path / "unknown", metadata={"model": "nobody", "arguments": {}})
    board, kept = choose_board(collect([tmp_path]))
    (e,) = kept.evaluations
    assert [run.path.parent.name for run in e.sweeps] == ["same"]
    assert e.sweeps[0].png is not None and e.sweeps[0].fixed_points()[0].alpha == 0.0
    reasons = {r.path.parent.name: r.reason for r in kept.rejected}
    assert "eps 0.3" in reasons["other-eps"]
    assert "no benchmark report of model 'nobody'" in reasons["unknown"]


def test_a_copied_report_is_ranked_once_and_the_copy_listed(tmp_path):
    """The same report.json copied into a second folder (or given twice under two names) was ranked twice: two
    rows of one evaluation, both labelled alike when the folders shared a name."""
    original = write_run(tmp_path / "runs" / "a" / "run")
    (tmp_path / "backup" / "run").mkdir(parents=True)
    copy = tmp_path / "backup" / "run" / "report.json"
    copy.write_text(original.read_text())
    inputs = collect([tmp_path / "runs", tmp_path / "backup"])
    assert [e.path for e in inputs.evaluations] == [original.resolve()]
    (rejected,) = inputs.rejected
    assert rejected.path == copy.resolve() and f"the same report as {original.resolve()}" in rejected.reason


def test_reports_in_folders_of_the_same_name_get_labels_that_tell_them_apart(tmp_path):
    """Two different reports in a/run and b/run were both labelled 'run' in the table and on their pages."""
    write_run(tmp_path / "a" / "run")
    write_run(tmp_path / "b" / "run", seed=1)
    write_run(tmp_path / "c" / "other", seed=2)
    labels = sorted(e.label for e in collect([tmp_path]).evaluations)
    assert labels == ["a/run", "b/run", "other"]


def test_input_names_that_are_not_files_are_listed_with_the_reason(tmp_path):
    """A report.json that is a broken link or a folder was skipped without a word when its folder was searched."""
    write_run(tmp_path / "good")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "report.json").symlink_to(tmp_path / "gone" / "report.json")
    (tmp_path / "folder" / "sweep.json").mkdir(parents=True)
    (tmp_path / "given").symlink_to(tmp_path / "nowhere")
    inputs = collect([tmp_path, tmp_path / "given"])
    assert [e.label for e in inputs.evaluations] == ["good"]
    reasons = {r.path.parent.name if r.path.name in ("report.json", "sweep.json") else r.path.name: r.reason
               for r in inputs.rejected}
    assert "a broken link" in reasons["linked"] and str(tmp_path / "gone") in reasons["linked"]
    assert "a folder named sweep.json, not a file" in reasons["folder"]
    assert "a broken link" in reasons["given"]


@pytest.mark.parametrize("change, match", [
    ({"radii": [0.0, float("inf")]}, "radii must be a non-empty list of finite"),
    ({"radii": [False, 0.5]}, "radii must be"),
    ({"curves": [{"label": "a", "certified_accuracy": [True, 0.5]}]}, "one fraction per radius"),
    ({"curves": [{"label": "a", "certified_accuracy": [0.5, 0.75]}]},
     "certifies more examples at radius 0.5 .0.75. than at the smaller radius 0.0"),
    ({"radii": [0.5, 0.0], "curves": [{"label": "a", "certified_accuracy": [0.75, 0.5]}]},
     "at radius 0.5 .0.75. than at the smaller radius 0.0"),  # radii in any order
])
def test_certificates_whose_numbers_cannot_be_are_left_out(tmp_path, change, match):
    """A certify.json whose certified accuracy rose with the radius (edited, or curves swapped), or that gave
    true/false or an infinite radius, was drawn on the model page as read."""
    write_run(tmp_path / "run")
    cert = {"model": tiny_result().model, "dataset": "fashion-mnist", "n_examples": 4, "method": "smoothing",
            "norm": "l2", "radii": [0.0, 0.5], "curves": [{"label": "a", "certified_accuracy": [0.75, 0.5]}]}
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "certify.json").write_text(json.dumps(cert))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "certify.json").write_text(json.dumps({**cert, **change}))
    inputs = collect([tmp_path])
    assert [c.path.parent.name for c in inputs.certificates] == ["good"]
    (rejected,) = inputs.rejected
    assert rejected.path.parent.name == "bad"
    assert re.search(match, rejected.reason), rejected.reason


def test_a_sweep_is_placed_by_the_setting_its_points_record(tmp_path):
    """A sweep whose arguments did not record the setting (the model's own defaults, a config file or a
    NAME,alpha=... model) was attached to its model's report on any board, though each point records where it was
    measured: a sweep at eps 0.3 was drawn beside a report at eps 0.1."""
    write_run(tmp_path / "run")
    model = tiny_result().model
    at = lambda eps: [SweepPoint(a, 0.9, 0.5 * a, "apgd-ce", 10, 1.0, dataset="fashion-mnist", threat_model="Linf",
                                 eps=eps) for a in (0.0, 1.0)]  # noqa: E731
    write_sweep(at(0.3), tmp_path / "other-eps", metadata={"model": model, "arguments": {"dataset": None}})
    write_sweep(at(0.1), tmp_path / "same", metadata={"model": model})
    write_sweep(at(0.1)[:1] + at(0.3)[1:], tmp_path / "mixed", metadata={"model": model})
    board, kept = choose_board(collect([tmp_path]))
    (e,) = kept.evaluations
    assert [run.path.parent.name for run in e.sweeps] == ["same"]
    reasons = {r.path.parent.name: r.reason for r in kept.rejected}
    assert "a sweep on fashion-mnist Linf eps 0.3, but this site is fashion-mnist Linf eps 0.1" in reasons["other-eps"]
    assert "measured in different settings (fashion-mnist Linf eps 0.1; fashion-mnist Linf eps 0.3)" in reasons["mixed"]


def test_model_info_fields_of_the_wrong_type_are_said_and_not_shown(tmp_path):
    """A hand-edited model_info.json with "additional_data": "yes" showed no value without a word (and a list as
    architecture was shown as Python's list text)."""
    report = write_run(tmp_path / "run")
    info_path = report.parent / "model_info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "additional_data": "yes", "architecture": ["WRN", "ResNet"]}))
    (e,) = collect([tmp_path]).evaluations
    assert e.additional_data is None and e.architecture == ""
    assert "additional_data is 'yes', not true or false" in e.model_info_error
    assert "architecture is ['WRN', 'ResNet'], not a string" in e.model_info_error
    assert e.model_info["clean_acc"] == info["clean_acc"]  # the rest is read
