"""The trade-off sweep (robust_mix.sweep)."""
from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch

from robust_mix.sweep import POLICY, SweepPoint, parse_alphas, plot_sweep, read_sweep, sweep, write_sweep
from test_attacks import adaptive_model
from test_benchmark import EPS, FAST, fmnist

torch.set_num_threads(1)


def test_parse_alphas():
    assert parse_alphas("0,0.5,1") == [0.0, 0.5, 1.0]
    assert parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        parse_alphas("0,1.5")


@pytest.mark.parametrize("text, expected", [
    ("0.1:0.8:0.2", [0.1, 0.3, 0.5, 0.7]),  # a step that does not divide the range stops before stop
    ("0:0.7:0.2", [0.0, 0.2, 0.4, 0.6]),
    ("0:1:0.35", [0.0, 0.35, 0.7]),  # not an error about a ratio 1.05 the user never asked for
    ("0.7:0.9:0.1", [0.7, 0.8, 0.9]),  # float error in (0.9 - 0.7) / 0.1 does not drop the stop
    ("0:1:0.1", [round(0.1 * i, 10) for i in range(11)]),
])
def test_a_range_of_alphas_never_goes_beyond_its_stop(text, expected):
    assert parse_alphas(text) == expected


def test_a_range_of_alphas_with_a_tiny_step_is_refused_at_once():
    with pytest.raises(ValueError, match=r"alphas '0:1:1e-12': a range of step 1e-12 gives 1000000000001 ratios"):
        parse_alphas("0:1:1e-12")


def test_sweep_refuses_repeated_alphas_before_any_run():
    with pytest.raises(ValueError, match=r"sweep alphas repeat \['0.5'\]"):
        sweep(adaptive_model(), [0.5, 1.0, 0.5])


def test_sweep_over_ratios_and_the_policy(tmp_path):
    model = adaptive_model()
    policy = model.alpha
    x, y = fmnist(8)
    points = sweep(model, [0.0, 0.5, 1.0], images=x, labels=y, eps=EPS, batch_size=8, attack="apgd-ce,apgd-t",
                   options=FAST, device="cpu", state_dir=tmp_path / "state")
    assert [p.alpha for p in points] == [0.0, 0.5, 1.0, POLICY]
    assert model.alpha is policy  # restored
    assert all(0 <= p.robust_accuracy <= p.clean_accuracy <= 1 for p in points)
    assert all(p.attack == "apgd-ce,apgd-t" for p in points)
    # the robust accuracy's interval on the 8 attacked examples, as benchmark reports give it
    assert all(p.robust_low <= p.robust_accuracy <= p.robust_high and p.robust_high - p.robust_low > 0.3
               for p in points)
    # the two ends are the base models: alpha 0 is the standard model alone
    with torch.no_grad():
        standard_clean = (model.standard(x).argmax(1) == y).float().mean().item()
    assert points[0].clean_accuracy == pytest.approx(standard_clean)
    assert (tmp_path / "state" / "alpha_0.5" / "run.json").is_file()

    paths = write_sweep(points, tmp_path / "out", metadata={"attack": "apgd-ce,apgd-t"})
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["alpha"] for r in rows] == ["0.0", "0.5", "1.0", POLICY]
    data = json.loads(paths["json"].read_text())
    assert data["metadata"]["attack"] == "apgd-ce,apgd-t" and len(data["points"]) == 4
    assert read_sweep(paths["json"])[0] == points and rows[0]["robust_low"] == str(points[0].robust_low)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_sweep(paths["json"]) == (points, {"attack": "apgd-ce,apgd-t"})
    assert all((p.dataset, p.threat_model, p.eps) == ("custom", "Linf", EPS) for p in points)


def _titles(monkeypatch) -> list[str]:
    """Collects the titles the plots are given."""
    from matplotlib.axes import Axes

    titles, set_title = [], Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda self, label, *a, **kw: (titles.append(label),
                                                                          set_title(self, label, *a, **kw))[1])
    return titles


def test_the_plot_title_states_the_data_set_threat_model_eps_and_attack(tmp_path, monkeypatch):
    """A saved sweep.png said the model and the attack only: not on what data, under which norm, at which eps."""
    titles = _titles(monkeypatch)
    points = [SweepPoint(a, 0.9 - a / 4, a / 2, "standard", 10_000, 1.0, "AutoAttack", dataset="cifar10",
                         threat_model="Linf", eps=8 / 255) for a in (0.0, 1.0)]
    plot_sweep(points, tmp_path / "a.png", "my-mix")
    assert titles[-1].splitlines() == ["my-mix", "cifar10, Linf, eps 8/255", "AutoAttack"]
    l2 = [dataclasses.replace(p, threat_model="L2", eps=0.5) for p in points]
    plot_sweep(l2 + [dataclasses.replace(points[0], alpha=0.5)], tmp_path / "b.png")
    assert titles[-1].splitlines()[1] == "cifar10, L2, eps 0.5; cifar10, Linf, eps 8/255"  # never one of them only
    old = [SweepPoint(0.0, 0.9, 0.1, "standard", 10, 1.0, "AutoAttack")]  # a sweep.json from before the fields
    plot_sweep(old, tmp_path / "c.png")
    assert titles[-1].splitlines()[1] == "data set, threat model and eps not recorded"


@pytest.mark.parametrize("text,match", [
    ('{"points": [', "not valid JSON"), ('{"points": []}', "non-empty 'points'"),
    ('{"points": [{"alpha": 0.5}]}', "exactly the fields"),
    ('{"points": [{"alpha": 0.5, "clean_accuracy": 85.0, "robust_accuracy": 0.1, "attack": "x", "n_examples": 2,'
     ' "wall_time_s": 1}]}', "clean_accuracy must be a fraction"),
    ('{"points": [{"alpha": 2, "clean_accuracy": 0.8, "robust_accuracy": 0.1, "attack": "x", "n_examples": 2,'
     ' "wall_time_s": 1}]}', "alpha must be in"),
    ('{"points": [{"alpha": 0.5, "clean_accuracy": 0.8, "robust_accuracy": 0.1, "attack": "x", "n_examples": 2,'
     ' "wall_time_s": 1, "robust_low": 0.2, "robust_high": 0.9}]}', "outside its interval"),
])
def test_read_sweep_rejects_what_write_sweep_never_writes(tmp_path, text, match):
    (tmp_path / "sweep.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_sweep(tmp_path / "sweep.json")


def test_sweep_needs_a_mixed_model():
    with pytest.raises(TypeError, match="MixedClassifier"):
        sweep(torch.nn.Linear(2, 2), [0.5])
    with pytest.raises(TypeError, match="MixedClassifier"):
        sweep(lambda: torch.nn.Linear(2, 2), [0.5])


def test_sweep_command_on_a_plain_classifier_is_one_error_line(capsys, tmp_path):
    """It ended in a TypeError traceback: the CLI turns only bad-input errors into one line."""
    from robust_mix.cli import main

    assert main(["sweep", "test_sweep:plain_classifier", "--alphas", "0,1", "--eps", "0.1", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: sweep needs a MixedClassifier (a model with an `alpha` to vary), got Sequential" in err
    assert "Traceback" not in err


def plain_classifier() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()


def test_sweep_in_workers_needs_a_model_factory():
    with pytest.raises(ValueError, match="workers > 1 needs a function that builds the model"):
        sweep(adaptive_model(), [0.5], workers=2)


def test_sweep_with_a_factory_gives_the_instance_points(tmp_path):
    x, y = fmnist(6)
    kwargs = dict(images=x, labels=y, eps=EPS, batch_size=6, attack="apgd-ce", options=FAST, device="cpu")
    from_factory = sweep(adaptive_model, [0.0, 1.0], **kwargs)
    from_instance = sweep(adaptive_model(), [0.0, 1.0], **kwargs)
    assert [p.alpha for p in from_factory] == [0.0, 1.0, POLICY]
    assert [(p.clean_accuracy, p.robust_accuracy) for p in from_factory] == \
           [(p.clean_accuracy, p.robust_accuracy) for p in from_instance]


def test_sweep_command_writes_csv_json_and_plot_and_names_the_attack(tmp_path, capsys, monkeypatch):
    from robust_mix.cli import main

    titles = _titles(monkeypatch)
    out = tmp_path / "sweep"
    assert main(["sweep", "test_attacks:adaptive_model", "--dataset", "fashion-mnist", "--eps", "0.1",
                 "--n-examples", "4", "--batch-size", "4", "--alphas", "0,1", "--attack", "apgd-ce",
                 "--n-iter", "4", "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "attack: APGD-CE (4 iter), partial:" in printed and "policy" in printed
    # the data, eps, images and seed every point was measured on, not the attack alone
    assert "fashion-mnist, Linf, eps 0.1, the first 4 test images, seed 0; attack: APGD-CE (4 iter)" in printed
    assert printed.count("(95 % interval ") == 3 and "4 examples)" in printed
    assert json.loads((out / "sweep.json").read_text())["metadata"]["attack"].startswith("APGD-CE (4 iter)")
    assert (out / "sweep.png").is_file() and len((out / "sweep.csv").read_text().splitlines()) == 4
    title = titles[-1].splitlines()
    assert title[:2] == ["test_attacks:adaptive_model", "fashion-mnist, Linf, eps 0.1"]
    assert title[2].startswith("APGD-CE (4 iter), partial:")


def test_ratios_that_differ_are_never_labelled_alike(tmp_path, capsys, monkeypatch):
    """Labels printed alphas with :g, so 0.1 and 0.10000000001 read the same in the table, the progress bars and
    the plot while their state folders (alpha_0.1, alpha_0.10000000001) and results differed."""
    from matplotlib.axes import Axes

    from robust_mix.certification import alpha_label
    from robust_mix.cli import main

    notes, annotate = [], Axes.annotate
    monkeypatch.setattr(Axes, "annotate", lambda self, text, *a, **kw: (notes.append(text),
                                                                         annotate(self, text, *a, **kw))[1])
    out = tmp_path / "sweep"
    assert main(["sweep", "test_attacks:adaptive_model", "--dataset", "fashion-mnist", "--eps", "0.1",
                 "--n-examples", "2", "--batch-size", "2", "--alphas", "0.1,0.10000000001,1", "--attack", "apgd-ce",
                 "--n-iter", "2", "--no-policy", "--workers", "1", "--out", str(out)]) == 0
    printed = [" ".join(line.split(":")[0].split()) for line in capsys.readouterr().out.splitlines()
               if line.startswith("alpha")]
    assert printed == ["alpha 0.1", "alpha 0.10000000001", "alpha 1"]
    assert sorted(p.name for p in (out / "state").iterdir()) == ["alpha_0.1", "alpha_0.10000000001", "alpha_1.0"]
    assert notes == ["0.1", "0.10000000001", "1"]
    assert alpha_label(0.1) == "alpha = 0.1" and alpha_label(0.10000000001) == "alpha = 0.10000000001"
    with pytest.raises(ValueError, match=r"sweep alphas repeat \['0.30000000000000004'\]"):
        sweep(adaptive_model(), [0.1 + 0.2, 0.3, 0.1 + 0.2])


def test_the_plotted_line_follows_alpha_whatever_order_the_points_come_in(tmp_path, monkeypatch):
    """sweep keeps the order of the ratios it is given: [1, 0, 0.5] drew a zigzag 1 -> 0 -> 0.5 instead of the
    trade-off curve 0 -> 0.5 -> 1."""
    from matplotlib.axes import Axes

    lines, plot = [], Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, **kw: (lines.append(a[:2]), plot(self, *a, **kw))[1])
    points = [SweepPoint(a, 0.9 - a / 4, a / 2, "standard", 10, 1.0, "AutoAttack") for a in (1.0, 0.0, 0.5)]
    points.append(SweepPoint(POLICY, 0.85, 0.3, "standard", 10, 1.0, "AutoAttack"))
    plot_sweep(points, tmp_path / "a.png")
    clean, robust = lines[0]
    assert clean == [90.0, 77.5, 65.0] and robust == [0.0, 25.0, 50.0]


_POINT = {"alpha": 0.5, "clean_accuracy": 0.8, "robust_accuracy": 0.1, "attack": "x", "n_examples": 2,
          "wall_time_s": 1.0, "label": "AutoAttack", "robust_low": 0.0, "robust_high": 0.5, "dataset": "cifar10",
          "threat_model": "Linf", "eps": 0.03}


@pytest.mark.parametrize("change,match", [
    ({"n_examples": "2"}, "n_examples must be a positive integer"), ({"n_examples": 0}, "n_examples must be"),
    ({"n_examples": 2.5}, "n_examples must be"), ({"n_examples": True}, "n_examples must be"),
    ({"wall_time_s": "1"}, "wall_time_s must be"), ({"wall_time_s": float("nan")}, "wall_time_s must be"),
    ({"wall_time_s": -1}, "wall_time_s must be"), ({"attack": 3}, "attack must be a string"),
    ({"label": None}, "label must be a string"), ({"dataset": 10}, "dataset must be a string or null"),
    ({"eps": "8/255"}, "eps must be a finite number"), ({"eps": -0.1}, "eps must be a finite number"),
    ({"clean_accuracy": 0.05}, "robust_accuracy 0.1 exceeds its clean_accuracy 0.05"),  # drawn above the diagonal
])
def test_read_sweep_checks_every_field_the_leaderboard_prints(tmp_path, change, match):
    """An edited sweep.json with n_examples "2" was read, then the leaderboard page broke printing f'{n:,}'."""
    (tmp_path / "sweep.json").write_text(json.dumps({"points": [{**_POINT, **change}]}))
    with pytest.raises(ValueError, match=match):
        read_sweep(tmp_path / "sweep.json")
    (tmp_path / "sweep.json").write_text(json.dumps({"points": [_POINT]}))
    assert read_sweep(tmp_path / "sweep.json")[0][0] == SweepPoint(**_POINT)


@pytest.mark.parametrize("change,match", [
    ({"threat_model": "Linfinity"}, r"point 0 threat_model must be one of \['Linf', 'L2', 'L1'\], got 'Linfinity'"),
    ({"eps": 8.0}, r"point 0 eps must be a finite number in \(0, 1\]; Linf budgets"),
    ({"eps": 0.0}, r"point 0 eps must be a finite number in \(0, 1\]"),
    ({"eps": 0.0, "threat_model": "L2"}, r"point 0 eps must be a finite number > 0, got 0\.0"),
    ({"wall_time_s": 1e300}, r"point 0 wall_time_s must be a finite number of seconds in \[0, .*\(ten years\)"),
])
def test_read_sweep_refuses_a_setting_or_time_no_sweep_writes_naming_file_point_and_value(tmp_path, change, match):
    """A sweep point's threat model, budget and time were only type-checked: 'Linfinity', eps 8 under Linf (a budget
    in 255ths), eps 0 and a wall time of 1e300 s were read and shown on the leaderboard."""
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"points": [{**_POINT, **change}]}))
    with pytest.raises(ValueError, match=rf"sweep\.json: {match}.*rerun robust-mix sweep"):
        read_sweep(path)


def test_read_sweep_refuses_two_points_of_one_ratio(tmp_path):
    """A sweep.json listing alpha 0.5 twice (two rows edited or joined) said two things of one ratio and was read."""
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"points": [_POINT, {**_POINT, "robust_accuracy": 0.0}]}))
    with pytest.raises(ValueError, match=r"sweep\.json: point 1 repeats alpha 0\.5 of an earlier point"):
        read_sweep(path)


def test_the_leaderboard_rejects_a_certificate_with_a_bad_example_count(tmp_path):
    """certify.json's n_examples was printed with int(...) on the page: 'ten' broke the site, 2.7 showed as 2."""
    from robust_mix.leaderboard.inputs import collect

    good = {"model": "m", "dataset": "fashion-mnist", "n_examples": 3, "method": "smoothing", "norm": "l2",
            "radii": [0.0, 0.1], "curves": [{"label": "alpha = 0.8", "certified_accuracy": [0.5, 0.2]}]}
    for i, change in enumerate([{"n_examples": "ten"}, {"n_examples": 2.7}, {"n_examples": 0}, {"norm": 2}]):
        (tmp_path / f"c{i}").mkdir()
        (tmp_path / f"c{i}" / "certify.json").write_text(json.dumps({**good, **change}))
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "certify.json").write_text(json.dumps(good))
    inputs = collect([tmp_path])
    assert [c.path.parent.name for c in inputs.certificates] == ["ok"]
    reasons = sorted((r.path.parent.name, r.reason) for r in inputs.rejected)
    assert [name for name, _ in reasons] == ["c0", "c1", "c2", "c3"]
    assert all("n_examples must be a positive integer" in why for _, why in reasons[:3])
    assert "norm must be a non-empty string" in reasons[3][1]


def test_a_fixed_ratio_model_s_sweep_shows_no_policy_row(tmp_path, monkeypatch):
    """The command drew an "alpha policy" bar for every model; a fixed-ratio model has no policy point, so the
    bar said "waiting for a worker" for the whole run."""
    from robust_mix.cli import benchmark as cli_benchmark, main

    rows = []

    class Recording(cli_benchmark.RowBars):  # the bars' rows, whether or not the standard error is a terminal
        def __init__(self, labels, *args, **kwargs):
            rows.append(list(labels))
            super().__init__(labels, *args, **kwargs)

    monkeypatch.setattr(cli_benchmark, "RowBars", Recording)
    options = ["--n-examples", "1", "--batch-size", "1", "--alphas", "1", "--attack", "apgd-ce", "--n-iter", "2",
               "--workers", "1"]
    assert main(["sweep", "fmnist-robust", *options, "--out", str(tmp_path / "fixed")]) == 0
    assert rows.pop() == ["alpha 1"]
    # a model built by a function may have a policy (this one has): its row stays
    assert main(["sweep", "test_attacks:adaptive_model", "--dataset", "fashion-mnist", "--eps", "0.1", *options,
                 "--out", str(tmp_path / "factory")]) == 0
    assert rows.pop() == ["alpha 1", "alpha policy"]


def test_a_failed_sweep_write_leaves_the_earlier_files_whole(tmp_path):
    """write_sweep replaced sweep.csv and sweep.json, then failed on the plot: the folder held the new points beside
    the old picture (or none), a set no run wrote."""
    old = [SweepPoint(0.0, 0.9, 0.1, "apgd-ce", 10, 1.0), SweepPoint(1.0, 0.7, 0.5, "apgd-ce", 10, 1.0)]
    write_sweep(old, tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("sweep.csv", "sweep.json")}
    (tmp_path / "sweep.png").unlink()
    (tmp_path / "sweep.png").mkdir()  # the picture cannot be written
    with pytest.raises(IsADirectoryError):
        write_sweep([dataclasses.replace(p, robust_accuracy=0.0) for p in old], tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("text, match", [
    ("0.5,0.5", r"alphas '0.5,0.5': ratios repeat \['0.5'\]; list each ratio once"),
    ("1e-1,0,0.1", r"ratios repeat \['0.1'\]"),  # the same float written twice
    ("0,policy", r"'policy' is not a ratio: the adaptive policy's own point is added .* --no-policy"),
])
def test_parse_alphas_refuses_what_sweep_refuses(text, match):
    """The command dropped a repeated ratio without a word while sweep() refused it, and took 'policy' for a number
    it could not read."""
    with pytest.raises(ValueError, match=match):
        parse_alphas(text)


def test_minus_zero_is_the_ratio_zero():
    """'-0' gave the ratio -0.0: labelled "alpha -0", its state in alpha_-0.0 beside alpha_0.0."""
    import math

    assert [math.copysign(1, a) for a in parse_alphas("-0,1")] == [1.0, 1.0]
    assert str(parse_alphas("-0.0")[0]) == "0.0"


def test_the_policy_is_not_a_ratio_of_the_sweep():
    """sweep(model, ['policy']) said an alpha must be "a number in [0, 1] (or an AdaptiveAlpha policy)", and an
    AdaptiveAlpha was then refused all the same."""
    import robust_mix

    model = adaptive_model()
    for alpha in (POLICY, model.alpha):
        with pytest.raises(TypeError, match=r"sweep alphas are fixed ratios in \[0, 1\], got .*: the adaptive policy "
                                            r"is not one of them; include_policy=True \(the default\) adds its point"):
            sweep(model, [0.5, alpha])
    with pytest.raises(TypeError, match="this model has a fixed ratio, so it has no policy point"):
        sweep(robust_mix.load_model("fmnist-robust"), [POLICY])
    with pytest.raises(TypeError, match=r"every sweep alpha must be a number in \[0, 1\]"):
        sweep(model, ["half"])  # other text keeps the plain message
