"""Reference results (robust_mix.reference): the file round trip, and when a live run agrees with its reference."""
from __future__ import annotations

import dataclasses
import json

import pytest

from robust_mix.reference import (AGREES, DIFFERS, MISSING, OTHER_ATTACK, OTHER_MODEL, Reference, ReferenceRow,
                                  RowSpec, compare)
from robust_mix.results import BenchmarkResult
from robust_mix.stats import clopper_pearson
from robust_mix.validate import InvalidInputError

SPEC = RowSpec("robust", "robust base", "fmnist-robust")


def run(robust: list[bool], *, clean_correct: int = 900, clean_examples: int = 1000, fingerprint: str = "abc",
        attack: str = "standard", seed: int = 0) -> BenchmarkResult:
    """A finished evaluation with these per-example robust flags (clean = robust or every other image)."""
    n = len(robust)
    clean = [r or i % 2 == 0 for i, r in enumerate(robust)]
    return BenchmarkResult(
        model="fmnist-robust", dataset="fashion-mnist", threat_model="Linf", eps=0.1, n_examples=n, attack=attack,
        seed=seed, clean_accuracy=sum(clean) / n, robust_accuracy=sum(robust) / n,
        suite_accuracy={"autoattack": sum(robust) / n}, stage_accuracy={"apgd-ce": sum(robust) / n},
        clean_flags=clean, robust_flags=list(robust), suite_flags={"autoattack": list(robust)}, wall_time_s=10.0,
        examples_per_second=n / 10, number_forward_passes=1, attack_settings={}, options={},
        versions={"robust_mix": "0.1.0", "torch": "2.14.1", "python": "3.11"}, config_fingerprint=fingerprint,
        full_clean_accuracy=clean_correct / clean_examples, full_clean_examples=clean_examples)


def flags(robust: int, n: int) -> list[bool]:
    return [i < robust for i in range(n)]


def test_reference_round_trips_through_its_file(tmp_path):
    reference = Reference.from_results([SPEC], [run(flags(620, 1000))], command="python claim.py --publish",
                                       date="2026-12-01")
    path = reference.save(tmp_path / "reference.json")
    again = Reference.load(path)
    assert again == reference
    row = again.rows["robust"]
    assert (row.n_examples, row.robust_accuracy, row.clean_accuracy, row.clean_examples) == (1000, 0.62, 0.9, 1000)
    assert row.robust_interval() == clopper_pearson(620, 1000)
    assert row.robust_accuracy_first(10) == 1.0 and row.attack_label.startswith("APGD-CE, partial")
    assert again.versions == {"robust_mix": "0.1.0", "torch": "2.14.1"}
    assert json.loads(path.read_text())["rows"]["robust"]["robust_flags"] == "1" * 620 + "0" * 380  # compact


def test_a_reference_needs_clean_accuracy_on_the_whole_test_set():
    partial = dataclasses.replace(run(flags(5, 10)), full_clean_accuracy=None, full_clean_examples=None)
    with pytest.raises(ValueError, match="row 'robust'.*no clean accuracy on the whole test set"):
        Reference.from_results([SPEC], [partial], command="c", date="d")


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.update(format="something/2"), "expected format 'robust_mix-reference/1'"),
    (lambda d: d["rows"]["robust"].update(robust_flags="01x"), "string of 0s and 1s"),
    (lambda d: d["rows"]["robust"].pop("seed"), "exactly the fields"),
    (lambda d: d["rows"]["robust"].update(clean_accuracy=1.5), "clean_accuracy"),
    (lambda d: d.update(rows={}), "'rows' must be an object"),
    (lambda d: d.pop("dataset"), "missing field.*'dataset'"),
    (lambda d: d.update(eps="abc"), "eps"),
    (lambda d: d.update(eps=float("nan")), "eps"),
    (lambda d: d.update(versions=[1, 2]), "versions"),
    (lambda d: d.update(command=None), "command"),
    (lambda d: d["rows"]["robust"].update(seed="0"), "seed"),
    (lambda d: d["rows"]["robust"].update(seed=True), "seed"),
    (lambda d: d["rows"]["robust"].update(options=[]), "options"),
    (lambda d: d["rows"]["robust"].update(config_fingerprint=5), "config_fingerprint"),
    (lambda d: d["rows"]["robust"].update(attack=None), "attack"),
    (lambda d: d["rows"]["robust"].update(clean_accuracy=0.12345), "whole number of the 1000 images"),
    (lambda d: d["rows"]["robust"].update(wall_time_s="x"), "wall_time_s"),
    (lambda d: d["rows"]["robust"].update(seed=-1), r"row 'robust': seed must be an integer >= 0, got -1"),
    (lambda d: d["rows"]["robust"].update(wall_time_s=1e300), r"row 'robust': wall_time_s must be a finite number of "
                                                              r"seconds in \(0, .*\(ten years\), got 1e\+300"),
    (lambda d: d["rows"]["robust"].update(wall_time_s=0.0), r"row 'robust': wall_time_s .* in \(0, "),
])
def test_a_broken_reference_file_is_refused_naming_what_is_wrong(tmp_path, edit, match):
    path = Reference.from_results([SPEC], [run(flags(6, 10))], command="c", date="d").save(tmp_path / "r.json")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match=match):
        Reference.load(path)


def reference_row(robust: int, n: int = 1000, **kw) -> ReferenceRow:
    return ReferenceRow.from_result(SPEC, run(flags(robust, n), **kw))


def test_a_live_run_agrees_when_the_reference_lies_inside_its_interval():
    live = run(flags(12, 20))  # 60 % on 20 images: interval about 36-81 %
    comparison = compare(live, reference_row(650))  # the reference: 100 % on the first 20 (its flags lead with 1s)
    assert comparison.status == DIFFERS and comparison.reference_robust == 1.0 and comparison.differing == 8
    assert "OUTSIDE" in comparison.detail and "8 of 20 images differ" in comparison.detail
    same = compare(live, ReferenceRow.from_result(SPEC, run(flags(12, 20) + flags(600, 980))))
    assert same.status == AGREES and same.differing == 0 and same.n_examples == 20
    assert same.live_interval == clopper_pearson(12, 20) and same.clean_agrees is True
    assert same.detail.startswith("agrees: robust 60.0 % on the first 20 inside the interval")


def test_clean_accuracy_outside_the_live_interval_is_a_difference():
    row = ReferenceRow.from_result(SPEC, run(flags(12, 20), clean_correct=800))
    comparison = compare(run(flags(12, 20), clean_correct=900), row)  # 90.0 % on 1,000: 88.0-91.8 %
    assert comparison.status == DIFFERS and comparison.clean_agrees is False and "clean 80.00 %" in comparison.detail
    other_count = compare(run(flags(12, 20), clean_correct=90, clean_examples=100), row)
    assert other_count.status == AGREES and other_count.clean_agrees is None  # not measured on the same images


def test_other_weights_attacks_or_no_reference_are_not_compared():
    live = run(flags(12, 20))
    other = compare(live, reference_row(12, 20, fingerprint="other"))
    assert other.status == OTHER_MODEL and "other weights" in other.detail and "fingerprint other" in other.detail
    assert compare(live, reference_row(12, 20, attack="apgd-ce")).status == OTHER_ATTACK
    assert compare(live, reference_row(12, 20, seed=1)).status == OTHER_ATTACK
    assert compare(live, None).status == MISSING


def test_the_shipped_reference_was_measured_on_the_weights_the_package_ships():
    """``benchmarks/fmnist/claim.py --publish`` wrote it; new weights or constants without a rerun fail here."""
    from robust_mix.loading import model_config_of
    from robust_mix.weights import package_file
    from robust_mix.zoo.fmnist import DEMO_ROWS, REFERENCE_FILE

    shipped = Reference.load(package_file(REFERENCE_FILE))
    assert list(shipped.rows) == [spec.key for spec in DEMO_ROWS]
    for spec in DEMO_ROWS:
        row = shipped.rows[spec.key]
        assert row.config_fingerprint == model_config_of(spec.model).fingerprint(), spec.key
        assert (row.attack.split("+")[0], row.options, row.seed) == ("standard", {}, 0)
        assert row.clean_examples == 10_000 and row.n_examples == 1_000


def test_an_other_attack_is_named_briefly():
    reference = ReferenceRow.from_result(SPEC, run([True] * 10))
    assert compare(run([True] * 5, attack="apgd-ce", seed=1), reference).detail == (
        "not compared: the reference ran attack 'standard' (this run 'apgd-ce'), seed 0 (this run 1)")


@pytest.mark.parametrize("change,named", [(dict(eps=0.3), "at eps 0.1 (this run 0.3)"),
                                          (dict(dataset="cifar10"), "on data set fashion-mnist (this run cifar10)"),
                                          (dict(threat_model="L2"), "under threat model Linf (this run L2)"),
                                          (dict(images_given=True), "on the first test images of fashion-mnist "
                                                                    "(this run on images passed to benchmark())")])
def test_a_run_at_another_eps_or_on_other_data_is_not_compared(change, named):
    live = dataclasses.replace(run(flags(12, 20)), **change)
    comparison = compare(live, reference_row(650))
    assert comparison.status == OTHER_ATTACK and comparison.n_examples == 0 and comparison.live_interval is None
    assert named in comparison.detail and comparison.detail.startswith("not compared")


def test_a_reference_row_is_not_made_from_images_passed_by_the_caller():
    """A reference row records flags of the first test images; one made from a run on the caller's images was
    later compared with runs on the test split, flag by flag, as if they were of the same images."""
    with pytest.raises(ValueError, match=r"images passed to benchmark\(\), not on the first test images"):
        ReferenceRow.from_result(SPEC, dataclasses.replace(run(flags(6, 10)), images_given=True))


def test_the_setting_of_a_loaded_reference_is_checked_too(tmp_path):
    path = Reference.from_results([SPEC], [run(flags(6, 10))], command="c", date="d").save(tmp_path / "r.json")
    row = Reference.load(path).rows["robust"]
    assert (row.dataset, row.threat_model, row.eps) == ("fashion-mnist", "Linf", 0.1)
    assert "eps" not in json.loads(path.read_text())["rows"]["robust"]  # the file keeps it once, at the top
    assert compare(dataclasses.replace(run(flags(6, 10)), eps=8 / 255), row).status == OTHER_ATTACK


def test_runs_that_record_no_configuration_are_not_taken_for_the_same_model():
    row = reference_row(12, 20, fingerprint=None)
    comparison = compare(run(flags(12, 20), fingerprint=None), row)
    assert comparison.status == OTHER_MODEL and "no config fingerprint" in comparison.detail


def test_percentages_in_the_comparison_never_round_to_all_or_none():
    live = run(flags(2999, 3000), clean_correct=900)
    comparison = compare(live, ReferenceRow.from_result(SPEC, run(flags(2999, 3000) + [True])))
    assert comparison.status == AGREES and "robust 99.9 % on the first 3,000" in comparison.detail


def test_an_unreadable_reference_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="reference file not found: .*nope.json"):
        Reference.load(tmp_path / "nope.json")
    with pytest.raises(InvalidInputError, match="is a folder"):
        Reference.load(tmp_path)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(InvalidInputError, match="binary.json is not a UTF-8 text file"):
        Reference.load(tmp_path / "binary.json")
    path = Reference.from_results([SPEC], [run(flags(6, 10))], command="c", date="d").save(tmp_path / "r.json")
    path.write_text(path.read_text()[:60])
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        Reference.load(path)


def test_an_agreement_says_when_clean_accuracy_was_not_compared():
    """A live run with clean accuracy on 500 images read "agrees" like one that matched the reference's clean
    accuracy on all 1,000 too: nothing said that only the robust flags were compared."""
    reference = ReferenceRow.from_result(SPEC, run(flags(12, 20) + flags(600, 980)))
    fewer = compare(run(flags(12, 20), clean_correct=450, clean_examples=500), reference)
    assert fewer.status == AGREES and fewer.clean_agrees is None
    assert fewer.detail.endswith("; clean accuracy not compared (this run measured it on 500 images, the reference "
                                 "on 1,000)")
    assert "not compared" not in compare(run(flags(12, 20)), reference).detail
