"""The PNG plots (sweep, training history, certificates): drawn headless, the caller's pyplot left alone, and the
sweep's intervals shown."""
import matplotlib
import pytest
import torch

from robust_mix import MixedClassifier
from robust_mix.certification import certify_model, plot_certification
from robust_mix.cli.train import plot_history
from robust_mix.sweep import POLICY, SweepPoint, plot_sweep
from conftest import make_tiny

PNG = b"\x89PNG\r\n\x1a\n"


def _points(intervals: bool = True) -> list:
    def point(alpha, clean, robust):
        low, high = (robust - 0.05, robust + 0.07) if intervals else (None, None)
        return SweepPoint(alpha, clean, robust, "standard", 50, 1.0, "AutoAttack standard", low, high,
                          "fashion-mnist", "Linf", 0.1)
    return [point(0.0, 0.9, 0.1), point(0.5, 0.8, 0.35), point(1.0, 0.6, 0.6), point(POLICY, 0.85, 0.5)]


def _sweep(tmp_path):
    return plot_sweep(_points(), tmp_path / "sweep.png", "m").read_bytes()


def _history(tmp_path):
    return plot_history([{"epoch": 1, "train_loss": 1.0, "val_acc": 0.5}, {"epoch": 2, "train_loss": 0.6,
                                                                            "val_acc": 0.7}], "t")


def _certificates(tmp_path):
    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.6)
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    result = certify_model(model, images, torch.arange(3), sigma=0.25, n0=4, n=8, radii=[0.0, 0.1], progress=False)
    return plot_certification(result)


@pytest.mark.parametrize("draw", [_sweep, _history, _certificates])
def test_a_plot_leaves_the_callers_pyplot_backend_and_open_figures_alone(draw, tmp_path):
    """Each plot called matplotlib.use("Agg"): in a session on another backend (a notebook's inline one, an
    interactive window) that switched pyplot's backend under the user and closed every figure they had open."""
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")  # a backend other than Agg, available without a display
    try:
        mine = plt.figure()
        assert draw(tmp_path)[:8] == PNG
        assert matplotlib.get_backend().lower() == "svg"
        assert plt.fignum_exists(mine.number), "the caller's open figure was closed"
        plt.close(mine)
    finally:
        plt.switch_backend(before)


def test_the_sweep_plot_shows_the_robust_accuracy_intervals(tmp_path, monkeypatch):
    """The sweep's points carry the robust accuracy's 95 % interval (the tables print it), but the plot drew bare
    points: a 2-point difference on 50 examples looked as certain as one on 10,000."""
    from matplotlib.axes import Axes

    drawn, errorbar = [], Axes.errorbar
    monkeypatch.setattr(Axes, "errorbar", lambda self, *a, **kw: (drawn.append((a, kw)), errorbar(self, *a, **kw))[1])
    plot_sweep(_points(), tmp_path / "a.png")
    assert len(drawn) == 1
    (x, y), kw = drawn[0]
    assert sorted(zip(x, y)) == sorted([(90.0, 10.0), (80.0, 35.0), (60.0, 60.0), (85.0, 50.0)])
    lower, upper = kw["yerr"]
    assert [round(v, 6) for v in lower] == [5.0] * 4 and [round(v, 6) for v in upper] == [7.0] * 4
    assert "95 % interval" in kw["label"]
    drawn.clear()
    plot_sweep(_points(intervals=False), tmp_path / "b.png")  # a sweep written before intervals were recorded
    assert drawn == []


def test_the_history_plot_ticks_whole_epochs(tmp_path):
    """The epoch axis of a two-epoch run was ticked 1.0, 1.2, ..., 2.0: epochs that do not exist."""
    from matplotlib.axes import Axes

    ticks = []
    original = Axes.set_xlabel

    def record(self, *a, **kw):
        ticks.append(self)
        return original(self, *a, **kw)

    import unittest.mock
    with unittest.mock.patch.object(Axes, "set_xlabel", record):
        _history(tmp_path)
    assert ticks
    for ax in ticks:
        assert all(float(t).is_integer() for t in ax.get_xticks()), ax.get_xticks()
    # the rates are fractions, not percent as every other plot of the project: the axis says so
    assert [ax.get_ylabel() for ax in ticks] == ["loss", "accuracy / detection rate (fraction, 0 to 1)"]


def test_the_certificate_plot_says_what_it_was_measured_on(monkeypatch):
    """certify.png's title named the model and sigma only: not the data set, how many images, or the failure
    probability the certificates hold at; its x axis gave no scale for the radius."""
    from matplotlib.axes import Axes

    texts = {}
    for method in ("set_title", "set_xlabel"):
        original = getattr(Axes, method)
        monkeypatch.setattr(Axes, method, lambda self, text, *a, _m=method, _o=original, **kw:
                            (texts.__setitem__(_m, text), _o(self, text, *a, **kw))[1])
    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.6)
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    result = certify_model(model, images, torch.arange(3), name="my-mix", sigma=0.25, n0=4, n=8, radii=[0.0],
                           progress=False, failure_prob=0.01, about={"dataset": "fashion-mnist", "split": "test"})
    plot_certification(result)
    assert texts["set_title"] == "my-mix: smoothing sigma = 0.25, n = 8\nfashion-mnist test, 3 images, failure probability 0.01"
    assert texts["set_xlabel"] == "l2 radius ([0, 1] pixel scale)"
