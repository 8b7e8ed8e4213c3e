"""robust_mix._compat: RobustBench imports and runs on the registry's pyautoattack; timm's and RobustBench's quirks.

The ``benchmark()`` tests run RobustBench's own ``robustbench.eval.benchmark`` on a tiny CIFAR-10-shaped
mixed model. The data come from RobustBench's ``load_clean_dataset`` patched to return 8 random
images labelled with the model's own predictions (no network here; clean accuracy is then 100 %).
Attack budgets are reduced through :func:`robust_mix.autoattack_settings` (APGD-CE and APGD-T 5
iterations, 2 target classes for APGD-T and FAB-T, FAB 5 iterations, Square 20 queries), and the
direct pyautoattack run they are compared with uses exactly the same settings and seed.
"""
import copy
import importlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyautoattack
import robust_mix
from robust_mix import MixedClassifier, autoattack_settings
from robust_mix._compat import preserve_timm_registry
from robust_mix._compat_autoattack import AutoAttack, EvaluationState
from robust_mix.attacks import set_apgd_iterations

from conftest import make_tiny

ROOT = Path(__file__).resolve().parents[1]
EPS = 6 / 255  # the tiny model keeps some but not all examples at this budget
N, BATCH = 8, 4


def reduced_budget(adversary: pyautoattack.AutoAttack) -> None:
    """The quick settings every adversary in these tests runs with (see the module docstring)."""
    for attack in (adversary.apgd, adversary.apgd_targeted):
        set_apgd_iterations(attack, 5)
    adversary.apgd_targeted.n_target_classes = 2
    adversary.fab.n_iter, adversary.fab.n_target_classes = 5, 2
    adversary.square.n_queries = 20


@pytest.fixture
def tiny_cifar():
    """A tiny mixed model on 3x32x32 inputs, 8 images and the labels it predicts for them."""
    model = MixedClassifier(make_tiny(0, in_chans=3, scale=20), make_tiny(1, in_chans=3, scale=20), alpha=0.7)
    x = torch.rand(N, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.fixture
def robustbench_data(tiny_cifar, monkeypatch, tmp_path):
    """RobustBench's clean-data loader answers with the tiny data set; the working folder is ``tmp_path``
    (``benchmark(to_disk=True)`` writes ``model_info/`` there)."""
    import robustbench.eval

    _, x, y = tiny_cifar
    calls = []

    def load_clean_dataset(dataset, n_examples, data_dir, prepr):
        calls.append((dataset.value, n_examples))
        return x[:n_examples], y[:n_examples]

    monkeypatch.setattr(robustbench.eval, "load_clean_dataset", load_clean_dataset)
    monkeypatch.chdir(tmp_path)
    return calls


def direct_pyautoattack(model, x, y) -> float:
    """Robust accuracy from pyautoattack itself, with the tests' seed and budget."""
    adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=EPS, version="standard", seed=0, device="cpu")
    reduced_budget(adversary)
    _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=BATCH)
    return (y_adv == y).float().mean().item()


# -- imports ----------------------------------------------------------------------------------------
def test_robustbench_imports_with_the_interface_it_calls():
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    import robustbench.eval

    assert "Wong2020Fast" in model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]
    assert robustbench.eval.AutoAttack is AutoAttack
    assert issubclass(AutoAttack, pyautoattack.AutoAttack)  # the attacks are pyautoattack's
    assert robustbench.eval.EvaluationState is EvaluationState


def test_other_autoattack_modules_are_pyautoattack_s():
    assert importlib.import_module("autoattack.state").EvaluationState is EvaluationState
    assert importlib.import_module("autoattack.autoattack").AutoAttack is AutoAttack
    for sub in ("autopgd_base", "fab_pt", "square", "checks", "other_utils"):
        assert importlib.import_module(f"autoattack.{sub}") is sys.modules[f"pyautoattack.{sub}"]


def test_building_a_model_prints_no_torch_jit_warning():
    """timm's import-time ``torch.jit.interface`` FutureWarning is silenced where robust_mix imports timm
    (a fresh process: in this one timm is imported already)."""
    code = "\n".join([
        "import pathlib, warnings",
        "warnings.simplefilter('error', FutureWarning)",
        "import robust_mix",
        "robust_mix.load_model('fmnist-robust')",
        "robust_mix.backbones.robustbench_files('cifar10', 'Linf', 'Wong2020Fast', pathlib.Path('.'))",
    ])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.jit.interface" not in proc.stderr
    assert "pkg_resources" not in proc.stderr


# -- RobustBench's AutoAttack interface ------------------------------------------------------------------
def test_interface_takes_robustbench_s_arguments(tiny_cifar, tmp_path):
    model, x, y = tiny_cifar
    with autoattack_settings(configure=reduced_budget):
        adversary = AutoAttack(model, norm="Linf", eps=EPS, version="standard", device=torch.device("cpu"),
                               log_path=str(tmp_path / "logs" / "aa.log"), seed=0)  # its folder is created
        x_adv = adversary.run_standard_evaluation(x, y, bs=BATCH)
        x_adv2, y_adv = adversary.run_standard_evaluation(x, y, bs=BATCH, return_labels=True)
    assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert torch.equal(x_adv, x_adv2) and y_adv.shape == y.shape
    assert 0 < (model(x_adv).argmax(1) == y).float().mean() < 1
    assert "apgd-ce" in (tmp_path / "logs" / "aa.log").read_text()  # log_path receives pyautoattack's log


def test_interface_runs_attacks_one_by_one(tiny_cifar):
    model, x, y = tiny_cifar
    with autoattack_settings(seed=0, configure=reduced_budget):
        adversary = AutoAttack(model, eps=EPS, version="custom", attacks_to_run=["apgd-ce", "square"])
        adversarial = adversary.run_standard_evaluation_individual(x, y, bs=BATCH)
    assert sorted(adversarial) == ["apgd-ce", "square"]
    assert all(a.shape == x.shape for a in adversarial.values())
    assert adversary.attacks_to_run == ["apgd-ce", "square"]


def test_interface_refuses_what_pyautoattack_cannot_do(tiny_cifar):
    model, _, _ = tiny_cifar
    with pytest.raises(ValueError, match="is_tf_model=True.*PyTorch models only"):
        AutoAttack(model, is_tf_model=True)
    with pytest.raises(ValueError, match=r"attacks_to_run=\['apgd-ce'\] is used with version='custom' only"):
        AutoAttack(model, attacks_to_run=["apgd-ce"], version="standard")


def run_on(x, y, bs=BATCH):
    """A run on ``x``, ``y`` against a plain classifier (a MixedClassifier would refuse bad images itself)."""
    plain = make_tiny(0, in_chans=3, scale=20)
    return lambda _: AutoAttack(plain, eps=EPS, version="custom", attacks_to_run=["apgd-ce"]).run_standard_evaluation(
        x, y, bs=bs)


_X, _Y = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(4)
BAD_ARGUMENTS = [  # (id, call on the model, fragment of the message); pyautoattack takes each without complaint
    ("eps=8 (0-255 units)", lambda m: AutoAttack(m, eps=8), "Linf budgets are in [0, 1] pixel units (8/255 = 0.0314), got 8"),
    ("eps=-0.1", lambda m: AutoAttack(m, eps=-0.1), "got -0.1"),
    ("eps=nan", lambda m: AutoAttack(m, eps=float("nan")), "got nan"),
    ("norm='linf'", lambda m: AutoAttack(m, norm="linf", eps=EPS), "norm must be one of ['Linf', 'L2', 'L1'], got 'linf'"),
    ("version='standart'", lambda m: AutoAttack(m, version="standart"),
     "version must be one of ['standard', 'plus', 'rand', 'custom'], got 'standart'"),
    ("custom, no attacks", lambda m: AutoAttack(m, version="custom"), "runs the attacks in attacks_to_run, a list of"),
    ("custom, unknown attack", lambda m: AutoAttack(m, version="custom", attacks_to_run=["apgd-ce", "pgd"]),
     "got unknown attack(s) ['pgd']"),
    ("custom, an attack in upper case", lambda m: AutoAttack(m, version="custom", attacks_to_run=["APGD-CE"]),
     "got unknown attack(s) ['APGD-CE'] (names are lower case with '-': did you mean 'apgd-ce'?)"),
    ("custom, a version as an attack", lambda m: AutoAttack(m, version="custom", attacks_to_run=["rand"]),
     "'rand' is a version, not an attack: pass version='rand' without attacks_to_run"),
    ("custom, an adaptive stage", lambda m: AutoAttack(m, version="custom", attacks_to_run=["adaptive-apgd-t"]),
     "robust_mix's adaptive attack, which its harness runs: robust_mix.benchmark(model, attack='adaptive-apgd-t'"),
    ("custom, an attack twice", lambda m: AutoAttack(m, version="custom", attacks_to_run=["apgd-ce", "apgd-ce"]),
     "attacks_to_run repeats attacks in ['apgd-ce', 'apgd-ce']"),
    ("custom, a string", lambda m: AutoAttack(m, version="custom", attacks_to_run="apgd-ce"), "use ['apgd-ce']"),
    ("device='tpu'", lambda m: AutoAttack(m, eps=EPS, device="tpu"), "device 'tpu' is not a device name"),
    # pyautoattack: int('a') deep in the first attack; 1.5 ran as seed 1, -1 as another seed
    ("seed='a'", lambda m: AutoAttack(m, eps=EPS, seed="a"), "seed must be an integer, got 'a' (str)"),
    ("seed=1.5", lambda m: AutoAttack(m, eps=EPS, seed=1.5), "seed must be an integer, got 1.5 (float)"),
    ("seed=-1", lambda m: AutoAttack(m, eps=EPS, seed=-1), "seed must be an integer >= 0, got -1"),
    ("settings' seed=1.5", lambda m: autoattack_settings(seed=1.5).__enter__(), "seed must be an integer, got 1.5"),
    ("verbose='no'", lambda m: AutoAttack(m, eps=EPS, verbose="no"), "verbose must be True or False, got 'no'"),
    ("log_path a folder", lambda m: AutoAttack(m, eps=EPS, log_path=str(ROOT)),  # IsADirectoryError at the run
     f"log_path {str(ROOT)!r} is a folder; name the log file in it"),
    ("state_path a folder", lambda m: AutoAttack(m, eps=EPS).run_standard_evaluation(_X, _Y, state_path=ROOT),
     f"state_path {str(ROOT)!r} is a folder; name the state file in it, e.g. state_path="),  # IsADirectoryError
    ("bs=0", run_on(_X, _Y, bs=0), "bs must be a positive integer (>= 1), got 0"),
    ("uint8 images", run_on((_X * 255).to(torch.uint8), _Y), "use images.float() / 255"),
    ("images in [0, 255]", run_on(_X * 255, _Y), "divide by 255"),
    ("3 labels for 4 images", run_on(_X, _Y[:3]), "got 3 labels for 4 images"),
    ("no images", run_on(_X[:0], _Y[:0]), "images hold no examples"),
    # pyautoattack's clean_accuracy: (N, 1) labels broadcast against (N,) predictions gave 2.0; bs=0 ZeroDivisionError
    ("clean_accuracy, labels (N, 1)", lambda m: AutoAttack(m, eps=EPS).clean_accuracy(_X, _Y[:, None]),
     "labels must have shape (N,), one class index per image, got shape (4, 1)"),
    ("clean_accuracy, images in [0, 255]", lambda m: AutoAttack(m, eps=EPS).clean_accuracy(_X * 255, _Y),
     "divide by 255"),
    # pyautoattack: label 15 of a 10-class model counted as one more misclassified image; images of another shape
    # than the model declares failed inside its first convolution
    ("a label beyond the classes", run_on(_X, torch.tensor([1, 2, 15, 3])), "labels must lie in [0, 10), got [15]"),
    ("clean_accuracy, a label beyond the classes",
     lambda m: AutoAttack(m, eps=EPS).clean_accuracy(_X, torch.tensor([1, 2, 15, 3])), "labels must lie in [0, 10)"),
    ("clean_accuracy, bs=0", lambda m: AutoAttack(m, eps=EPS).clean_accuracy(_X, _Y, bs=0),
     "bs must be a positive integer (>= 1), got 0"),
    ("L1 eps beyond every image", lambda m: AutoAttack(m, norm="L1", eps=3100.0, version="custom",
                                                       attacks_to_run=["apgd-ce"]).run_standard_evaluation(_X, _Y),
     "eps=3100 under L1 is larger than 3072, the largest L1 distance between two images of shape (3, 32, 32)"),
]


@pytest.mark.parametrize("call, names", [pytest.param(c, n, id=i) for i, c, n in BAD_ARGUMENTS])
def test_interface_refuses_bad_arguments_naming_them(tiny_cifar, call, names):
    model, _, _ = tiny_cifar
    with pytest.raises(robust_mix.validate.InvalidInputError) as info:
        call(model)
    assert names in str(info.value)


def test_interface_reads_robustbench_s_threat_model_enum(tiny_cifar):
    from robustbench.model_zoo.enums import ThreatModel

    adversary = AutoAttack(tiny_cifar[0], norm=ThreatModel.L2, eps=0.5)
    assert adversary.norm == "L2" and adversary.apgd.norm == "L2"


def test_state_reads_from_a_string_path_with_float_flags(tiny_cifar, tmp_path):
    model, x, y = tiny_cifar
    path = tmp_path / "state.json"
    with autoattack_settings(seed=0, configure=reduced_budget):
        AutoAttack(model, eps=EPS).run_standard_evaluation(x, y, bs=BATCH, state_path=str(path))
    state = EvaluationState.from_disk(str(path))
    saved = json.loads(path.read_text())["_robust_flags"]
    assert state.robust_flags.dtype == torch.float32
    assert state.robust_flags.tolist() == [float(f) for f in saved]
    assert state.robust_flags.mean().item() == state.robust_accuracy == sum(saved) / len(saved)


def test_settings_apply_inside_the_block_only(tiny_cifar):
    model, _, _ = tiny_cifar
    with autoattack_settings(seed=3, configure=reduced_budget):
        inside = AutoAttack(model)
    outside = AutoAttack(model)
    assert (inside.seed, inside.square.n_queries) == (3, 20)
    assert (outside.seed, outside.square.n_queries) == (None, 5000)


@pytest.mark.parametrize("version, attacks, match", [
    ("standard", (), r"the apgd-t attack needs at least 4 .*leave it out: version='custom', "
                     r"attacks_to_run=\['apgd-ce', 'fab-t', 'square'\]"),
    ("plus", (), "the apgd-t attack needs at least 4"),
    ("custom", ["fab-t"], r"the fab-t attack aims at 9 target classes, but the model scores 3 classes.*"
                          r"adversary.fab.n_target_classes = 2"),
])
def test_interface_refuses_attacks_the_model_has_too_few_classes_for_before_any_work(tmp_path, version, attacks,
                                                                                     match):
    """pyautoattack only warned ('with only 3 classes it is not possible to use the targeted DLR loss!'), then
    failed mid-run with a bare IndexError ('index -4 is out of bounds for dimension 1 with size 3')."""
    model = MixedClassifier(make_tiny(0, num_classes=3, in_chans=3, scale=20),
                            make_tiny(1, num_classes=3, in_chans=3, scale=20), alpha=0.7)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    with autoattack_settings(seed=0, configure=reduced_budget):
        adversary = AutoAttack(model, eps=EPS, version=version, attacks_to_run=attacks)
    adversary.fab.n_target_classes = adversary.apgd_targeted.n_target_classes = 9
    with pytest.raises(robust_mix.validate.InvalidInputError, match=match):
        adversary.run_standard_evaluation(x, y, bs=BATCH, state_path=tmp_path / "state.json")
    assert not (tmp_path / "state.json").exists()  # refused before the first attack
    adversary.fab.n_target_classes = 2  # as the message says: the run goes through
    if version == "custom":
        assert adversary.run_standard_evaluation(x, y, bs=BATCH).shape == x.shape


def test_interface_refuses_a_model_in_training_mode_and_leaves_it_unchanged(tiny_cifar):
    """pyautoattack attacked a model whose BatchNorm layers were in training mode: every query normalised with its
    batch's statistics and wrote them into the running ones (RobustBench's benchmark() refuses such a model)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))
    _, x, y = tiny_cifar
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with autoattack_settings(seed=0, configure=reduced_budget):
        adversary = AutoAttack(net, eps=EPS, version="custom", attacks_to_run=["apgd-ce"])
    with pytest.raises(robust_mix.validate.InvalidInputError,
                       match=r"the model is in training mode \(1 BatchNorm layer\(s\) such as '1'\).*call "
                             r"model.eval\(\) before run_standard_evaluation\(\)"):
        adversary.run_standard_evaluation(x, y, bs=BATCH)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    net.eval()
    assert adversary.run_standard_evaluation(x, y, bs=BATCH).shape == x.shape


@pytest.mark.parametrize("n_iter", [1, 2])
def test_interface_refuses_apgd_budgets_too_small_for_l1_rounds(tiny_cifar, n_iter):
    """Standard L1 runs APGD in rounds at 3, 2 and 1 times eps: 1 iteration failed in pyautoattack ('zeros: Dimension
    size must be non-negative'), 2 ran none at the run's eps."""
    model, x, y = tiny_cifar

    def budget(adversary):
        reduced_budget(adversary)
        set_apgd_iterations(adversary.apgd, n_iter)

    with autoattack_settings(seed=0, configure=budget):
        adversary = AutoAttack(model, norm="L1", eps=10.0)
    with pytest.raises(robust_mix.validate.InvalidInputError,
                       match=rf"the apgd-ce attack runs {n_iter} iteration\(s\), but under L1 .* needs at least 3; "
                             r"give adversary.apgd 3 iterations or more"):
        adversary.run_standard_evaluation(x, y, bs=BATCH)


@pytest.mark.parametrize("entry", ["robust_mix.benchmark", "AutoAttack", "robustbench benchmark", "clean_accuracy"])
def test_a_model_on_the_meta_device_is_refused_at_every_entry_point(tiny_cifar, robustbench_data, entry):
    """``model.to("meta")`` keeps shapes, not values: torch failed at the first prediction ("Tensor.item() cannot be
    called on meta tensors", "Cannot copy out of meta tensor; no data!")."""
    import robustbench.eval
    import robustbench.utils

    model, x, y = tiny_cifar
    meta = copy.deepcopy(model).to("meta")
    calls = {
        "robust_mix.benchmark": lambda: robust_mix.benchmark(meta, images=x, labels=y, eps=EPS, attack="apgd-ce",
                                                             device="cpu"),
        "AutoAttack": lambda: AutoAttack(meta, eps=EPS),
        "robustbench benchmark": lambda: robustbench.eval.benchmark(meta, n_examples=N, dataset="cifar10", eps=EPS,
                                                                    batch_size=BATCH, device="cpu"),
        "clean_accuracy": lambda: robustbench.utils.clean_accuracy(meta, x, y, batch_size=BATCH, device="cpu"),
    }
    with pytest.raises(robust_mix.validate.InvalidInputError,
                       match=r"model's tensors are on the meta device \(shapes without values, such as "
                             r"'standard.stage1.0.weight'\), so it cannot predict; give it values first: "
                             r"model.to_empty\(device='cpu'\)"):
        calls[entry]()
    assert robustbench_data == []


class NoisyClassifier(torch.nn.Module):
    """A randomized defense: Gaussian noise on the input of every query."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_tiny(0, in_chans=3, scale=20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.05 * torch.randn_like(x))


def test_a_randomized_model_under_a_deterministic_version_is_said_once_with_what_to_do(tiny_cifar, caplog):
    """pyautoattack warned 'it seems to be a randomized defense! Please use version="rand"' before every attack of the
    cascade (5 times for the standard version), advice RobustBench's benchmark(), which has no version, cannot follow."""
    _, x, _ = tiny_cifar
    model = NoisyClassifier().eval()
    torch.manual_seed(0)
    with torch.no_grad():
        y = model(x).argmax(1)
    with autoattack_settings(seed=0, configure=reduced_budget), caplog.at_level(logging.WARNING, logger="auto-attack"):
        AutoAttack(model, eps=EPS, version="standard").run_standard_evaluation(x, y, bs=BATCH)
    notices = [r.getMessage() for r in caplog.records if "randomized defense" in r.getMessage()]
    assert len(notices) == 1
    assert "run AutoAttack(model, version='rand', ...) (APGD with EOT), or robust_mix.benchmark(model, attack='rand'); " \
           "RobustBench's benchmark() runs version='standard' only" in notices[0]
    caplog.clear()
    with autoattack_settings(seed=0, configure=reduced_budget), caplog.at_level(logging.WARNING, logger="auto-attack"):
        AutoAttack(model, eps=EPS, version="rand").run_standard_evaluation(x, y, bs=BATCH)
    assert not [r for r in caplog.records if "randomized defense" in r.getMessage()]  # the version it asks for


# -- robustbench.eval.benchmark --------------------------------------------------------------------------
def test_benchmark_equals_pyautoattack_on_the_same_examples(tiny_cifar, robustbench_data, tmp_path):
    import robustbench.eval

    model, x, y = tiny_cifar
    with autoattack_settings(seed=0, configure=reduced_budget):
        clean, robust = robustbench.eval.benchmark(model, n_examples=N, dataset="cifar10", threat_model="Linf",
                                                   eps=EPS, batch_size=BATCH, to_disk=True, model_name="TinyMix")
    assert robustbench_data == [("cifar10", N)]
    expected = direct_pyautoattack(model, x, y)
    assert clean == 1.0
    assert robust == expected and 0 < robust < 1
    info = json.loads((tmp_path / "model_info" / "cifar10" / "Linf" / "TinyMix.json").read_text())
    assert info["clean_acc"] == "100.0" and info["autoattack_acc"] == str(round(expected * 100, 2))
    assert info["eps"] == EPS


def test_benchmark_refuses_eps_in_0_255_units(tiny_cifar, robustbench_data):
    """RobustBench passes eps on unchecked: eps=8 (meaning 8/255) would attack with every image reachable."""
    import robustbench.eval

    model, _, _ = tiny_cifar
    with autoattack_settings(seed=0, configure=reduced_budget), \
            pytest.raises(robust_mix.validate.InvalidInputError, match=r"\(8/255 = 0.0314\), got 8"):
        robustbench.eval.benchmark(model, n_examples=N, dataset="cifar10", threat_model="Linf", eps=8, batch_size=BATCH)
    assert robustbench_data == []  # refused before the data were loaded (AutoAttack refused after the clean pass)


class Interrupted(Exception):
    pass


def test_benchmark_resumes_from_its_state(tiny_cifar, robustbench_data, tmp_path):
    """A run stopped in its last attack resumes from ``aa_state_path`` without redoing the finished ones,
    and ends where an uninterrupted run ends."""
    import robustbench.eval

    model, x, y = tiny_cifar
    state = tmp_path / "aa_state.json"
    settings = dict(n_examples=N, dataset="cifar10", threat_model="Linf", eps=EPS, batch_size=BATCH)

    def stop_in_square(adversary):
        reduced_budget(adversary)
        adversary.square.perturb = lambda *a, **k: (_ for _ in ()).throw(Interrupted())

    with autoattack_settings(seed=0, configure=stop_in_square), pytest.raises(Interrupted):
        robustbench.eval.benchmark(model, **settings, aa_state_path=state)
    assert set(json.loads(state.read_text())["_run_attacks"]) == {"apgd-ce", "apgd-t", "fab-t"}

    def finished(*names):
        def configure(adversary):
            reduced_budget(adversary)
            for name in names:
                getattr(adversary, name).perturb = lambda *a, **k: pytest.fail("a finished attack ran again")
        return configure

    with autoattack_settings(seed=0, configure=finished("apgd", "apgd_targeted", "fab")):
        resumed = robustbench.eval.benchmark(model, **settings, aa_state_path=str(state))
    with autoattack_settings(seed=0, configure=reduced_budget):
        uninterrupted = robustbench.eval.benchmark(model, **settings)
    assert resumed == uninterrupted == (1.0, direct_pyautoattack(model, x, y))
    assert set(json.loads(state.read_text())["_run_attacks"]) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    with autoattack_settings(seed=0, configure=finished("apgd", "apgd_targeted", "fab", "square")):
        assert robustbench.eval.benchmark(model, **settings, aa_state_path=state) == resumed  # nothing left to run


def test_a_state_of_other_settings_is_refused(tiny_cifar, tmp_path):
    model, x, y = tiny_cifar
    path = tmp_path / "state.json"
    with autoattack_settings(seed=0, configure=reduced_budget):
        AutoAttack(model, eps=EPS).run_standard_evaluation(x, y, bs=BATCH, state_path=path)
        with pytest.raises(ValueError, match=r"records a run of \['apgd-ce', 'apgd-t', 'fab-t', 'square'\], this "
                                             r"adversary runs \['apgd-ce'\]"):
            AutoAttack(model, eps=EPS, version="custom", attacks_to_run=["apgd-ce"]).run_standard_evaluation(
                x, y, bs=BATCH, state_path=path)
        with pytest.raises(ValueError, match="records 8 examples, 4 are given"):
            AutoAttack(model, eps=EPS).run_standard_evaluation(x[:4], y[:4], bs=BATCH, state_path=path)


@pytest.mark.parametrize("other, differs", [
    (dict(norm="L2", eps=0.5), "eps, norm"),
    (dict(eps=4 / 255), "eps"),
    (dict(seed=1), "seed"),
    (dict(images="flipped"), "examples"),
    (dict(n_iter=7), "budgets"),
    (dict(model="other"), "model"),  # README's aa_state_path="aa_state.json", reused for the next model
])
def test_a_state_of_another_norm_eps_seed_budget_or_examples_is_refused(tiny_cifar, tmp_path, other, differs):
    """A state_path (RobustBench's aa_state_path) written by a Linf 6/255 run was resumed by an L2 run, a run at
    another eps or seed, with other budgets, on other images of the same count or of another model: the same attacks'
    names were all it checked, so the finished run's flags were returned as the new run's numbers."""
    model, x, y = tiny_cifar
    path = tmp_path / "state.json"
    with autoattack_settings(seed=0, configure=reduced_budget):
        AutoAttack(model, eps=EPS).run_standard_evaluation(x, y, bs=BATCH, state_path=path)
        finished = json.loads(path.read_text())
    settings = {"norm": other.get("norm", "Linf"), "eps": other.get("eps", EPS)}
    images = x.flip(-1) if other.get("images") else x
    attacked = MixedClassifier(model.standard, model.robust, alpha=0.5) if other.get("model") else model

    def configure(adversary):
        reduced_budget(adversary)
        if "n_iter" in other:
            adversary.fab.n_iter = other["n_iter"]

    with autoattack_settings(seed=other.get("seed", 0), configure=configure):
        with pytest.raises(ValueError, match=rf"records a run with another {differs} .*use another state_path"):
            AutoAttack(attacked, **settings).run_standard_evaluation(images, y, bs=BATCH, state_path=path)
    assert json.loads(path.read_text()) == finished  # the finished run's state is left as it was
    with autoattack_settings(seed=0, configure=reduced_budget):  # the same settings resume it
        AutoAttack(model, eps=EPS).run_standard_evaluation(x, y, bs=BATCH, state_path=path)


def test_a_state_without_the_record_of_its_setting_resumes_with_a_warning(tiny_cifar, tmp_path, caplog):
    """A state pyautoattack (or an older robust_mix) wrote has no setting to compare: it resumes, saying so."""
    model, x, y = tiny_cifar
    path = tmp_path / "state.json"
    with autoattack_settings(seed=0, configure=reduced_budget):
        AutoAttack(model, eps=EPS).run_standard_evaluation(x, y, bs=BATCH, state_path=path)
        older = {k: v for k, v in json.loads(path.read_text()).items() if k != "setting"}
        path.write_text(json.dumps(older))
        AutoAttack(model, eps=EPS).run_standard_evaluation(x, y, bs=BATCH, state_path=path)
    assert "does not record the model, norm, eps, seed, budgets and examples" in caplog.text
    assert json.loads(path.read_text())["setting"]["norm"] == "Linf"  # recorded from now on


# -- timm's registry --------------------------------------------------------------------------------------
def test_timm_registry_forgets_models_registered_in_the_block():
    import timm

    def compat_probe_model(pretrained=False, **kwargs):
        return torch.nn.Linear(1, 1)

    compat_probe_model.__module__ = __name__
    with preserve_timm_registry():
        timm.models.register_model(compat_probe_model)
        assert timm.is_model("compat_probe_model")
    assert not timm.is_model("compat_probe_model")
    assert "compat_probe_model" not in timm.list_models()


# -- robustbench.eval.benchmark's arguments, checked before any work -----------------------------------------
@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")], ids=["str", "torch.device"])
def test_benchmark_takes_a_device_name(tiny_cifar, robustbench_data, device):
    """RobustBench reads a str as a Sequence of devices and raises a bare NotImplementedError."""
    import robustbench.eval

    model, x, y = tiny_cifar
    with autoattack_settings(seed=0, configure=reduced_budget):
        clean, robust = robustbench.eval.benchmark(model, n_examples=N, dataset="cifar10", threat_model="Linf",
                                                   eps=EPS, batch_size=BATCH, device=device)
    assert (clean, robust) == (1.0, direct_pyautoattack(model, x, y))


@pytest.mark.parametrize("device, message", [
    ("cuda:99", "cuda:99"), ("gpu", "'gpu' is not a device name"),
    ([torch.device("cpu"), torch.device("cpu")], "evaluates on one device"),
])
def test_benchmark_refuses_devices_that_are_not_here(tiny_cifar, robustbench_data, device, message):
    import robustbench.eval

    with pytest.raises(robust_mix.validate.InvalidInputError, match=re.escape(message)):
        robustbench.eval.benchmark(tiny_cifar[0], n_examples=N, dataset="cifar10", eps=EPS, device=device)
    assert robustbench_data == []  # refused before the data were loaded


def test_benchmark_refuses_a_model_of_another_label_set(tiny_cifar, robustbench_data):
    """A 10-class model scored on CIFAR-100 labels: RobustBench would print 0 % and 0 % without complaint."""
    import robustbench.eval
    from robustbench.model_zoo.enums import BenchmarkDataset

    model = tiny_cifar[0]
    model.config = robust_mix.ModelConfig(name="tiny", dataset="cifar10", num_classes=10, alpha=0.7)
    with pytest.raises(robust_mix.validate.InvalidInputError,
                       match=r"scores 10 classes, but dataset='cifar100' has 100.*pass dataset='cifar10'"):
        robustbench.eval.benchmark(model, n_examples=N, dataset=BenchmarkDataset.cifar_100, eps=EPS)
    assert robustbench_data == []


def test_benchmark_refuses_a_model_of_another_input_shape_before_loading_data(robustbench_data):
    """A Fashion-MNIST model (1x28x28) evaluated on CIFAR-10 failed only after RobustBench had downloaded and loaded
    the data set, on the first image."""
    import robustbench.eval

    model = robust_mix.load_model("fmnist-robust", pretrained=False)
    with pytest.raises(robust_mix.validate.InvalidInputError,
                       match=r"takes \(1, 28, 28\) images .* dataset='cifar10''s test images are \(3, 32, 32\).*"
                             r"evaluate this fashion-mnist model with robust_mix.benchmark"):
        robustbench.eval.benchmark(model, n_examples=N, dataset="cifar10", eps=EPS, batch_size=BATCH)
    assert robustbench_data == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_a_model_in_another_dtype_is_refused_before_any_work_saying_what_to_do(tiny_cifar, robustbench_data, dtype):
    """pyautoattack attacks float32 images: the model refused them inside the first attack (or RobustBench's clean
    pass) with 'images are torch.float32 ...; convert them with images.to(...)', images the caller had converted."""
    import robustbench.eval

    model, x, y = tiny_cifar
    model.to(dtype)
    message = rf"computes in torch.{str(dtype).split('.')[-1]}.*call model.float\(\) first.*robust_mix.benchmark"
    with pytest.raises(robust_mix.validate.InvalidInputError, match=message):
        AutoAttack(model, eps=EPS).run_standard_evaluation(x.to(dtype), y, bs=BATCH)
    with pytest.raises(robust_mix.validate.InvalidInputError, match=message):
        robustbench.eval.benchmark(model, n_examples=N, dataset="cifar10", eps=EPS, batch_size=BATCH)
    assert robustbench_data == []


def test_benchmark_refuses_a_model_in_training_mode(tiny_cifar, robustbench_data):
    """RobustBench only warns; the clean pass would then update the mixing network's BatchNorm statistics."""
    import robustbench.eval

    model = tiny_cifar[0]
    model.alpha = robust_mix.build_adaptive_policy(model, robust_mix.PolicyConfig(
        standard_layers=["stage1", "stage2"], robust_layers=["stage1", "stage2"], widths=[4, 4], blocks=1,
        input_shape=(3, 32, 32)))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(robust_mix.validate.InvalidInputError, match=r"training mode .*call model.eval\(\)"):
        robustbench.eval.benchmark(model, n_examples=N, dataset="cifar10", eps=EPS, batch_size=BATCH)
    assert robustbench_data == [] and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_clean_accuracy_refuses_a_model_in_training_mode_and_counts_good_input_as_before(tiny_cifar):
    """RobustBench's clean_accuracy() ran a model in training mode without a word: each batch normalised with its
    own statistics and written into the running ones. A correct call still gets RobustBench's own number."""
    import robustbench.eval
    import robustbench.utils

    model, x, y = tiny_cifar
    model.alpha = robust_mix.build_adaptive_policy(model, robust_mix.PolicyConfig(
        standard_layers=["stage1", "stage2"], robust_layers=["stage1", "stage2"], widths=[4, 4], blocks=1,
        input_shape=(3, 32, 32)))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(robust_mix.validate.InvalidInputError, match=r"training mode .*call model.eval\(\) before "
                                                                    r"clean_accuracy\(\)"):
        robustbench.utils.clean_accuracy(model, x, y, batch_size=BATCH)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model.eval()
    unchecked = robustbench.utils.clean_accuracy.__wrapped__
    assert robustbench.eval.clean_accuracy is robustbench.utils.clean_accuracy
    assert robustbench.utils.clean_accuracy(model, x, y, batch_size=3) == unchecked(model, x, y, batch_size=3)


@pytest.mark.parametrize("where, message", [
    (lambda tmp: tmp / "a_file" / "dir" / "state.json", r"a_file is a file, not a folder"),
    (lambda tmp: tmp, r"aa_state_path .* is a folder; name the state file in it"),
], ids=["folder under a file", "a folder"])
def test_benchmark_refuses_an_aa_state_path_it_cannot_write_before_any_work(tiny_cifar, robustbench_data, tmp_path,
                                                                            where, message):
    """RobustBench would load the data and score the clean pass, then fail writing the state."""
    import robustbench.eval

    (tmp_path / "a_file").write_text("not a folder")  # a parent that cannot be created, even as root
    with pytest.raises(robust_mix.validate.InvalidInputError, match=message):
        robustbench.eval.benchmark(tiny_cifar[0], n_examples=N, dataset="cifar10", eps=EPS, batch_size=BATCH,
                                   aa_state_path=where(tmp_path))
    assert robustbench_data == []


def test_benchmark_creates_the_folder_of_its_aa_state_path(tiny_cifar, robustbench_data, tmp_path):
    import robustbench.eval

    state = tmp_path / "runs" / "cifar10" / "state.json"
    with autoattack_settings(seed=0, configure=reduced_budget):
        robustbench.eval.benchmark(tiny_cifar[0], n_examples=N, dataset="cifar10", eps=EPS, batch_size=BATCH,
                                   aa_state_path=str(state))
    assert state.is_file()


@pytest.mark.parametrize("changes, error, message", [
    ({"n_examples": 0}, ValueError, r"n_examples must be a positive integer \(>= 1\), got 0"),
    ({"n_examples": -1}, ValueError, r"n_examples must be a positive integer \(>= 1\), got -1"),  # ran on 7 of 8
    ({"n_examples": 2.5}, TypeError, r"n_examples must be an integer"),
    ({"batch_size": 0}, ValueError, r"batch_size must be a positive integer \(>= 1\), got 0"),  # ZeroDivisionError
    ({"n_examples": 20_000}, ValueError,  # RobustBench evaluated CIFAR-10's 10,000 without a word
     r"n_examples=20000, but RobustBench evaluates at most 10,000 cifar10 test images; pass n_examples <= 10000"),
    ({"eps": None}, ValueError, r"threat_model='Linf' needs an attack budget: pass eps \(e.g. eps=8/255"),
    ({"eps": None, "threat_model": "L2"}, ValueError, r"threat_model='L2' needs an attack budget"),
    ({"eps": 127.5, "threat_model": "L2"}, ValueError, r"eps=127\.5 under L2 is larger than 55\.43.*127\.5/255 is eps=0\.5"),
    ({"to_disk": True}, ValueError, r"to_disk=True writes the results to .*model_name=None; pass model_name="),
    ({"to_disk": "no"}, TypeError, r"to_disk must be True or False, got 'no'"),
    # RobustBench wrote (or read) the file only after the whole evaluation, whose results were then lost
    ({"to_disk": True, "model_name": "blocked"}, ValueError,
     r"cannot write to the folder to_disk=True writes to 'model_info/cifar10/Linf': model_info is a file"),
    ({"to_disk": True, "model_name": "broken"}, ValueError,
     r"to_disk=True updates 'model_info/cifar10/Linf/broken.json', which RobustBench cannot read"),
    ({"log_path": "{tmp}/a_file/log.txt"}, ValueError, r"a_file is a file, not a folder"),
    ({"log_path": "{tmp}"}, ValueError, r"log_path .* is a folder; name the log file in it, e.g. log_path="),
    # RobustBench: a bare "'linf' is not a valid ThreatModel", naming neither its names nor the one meant
    ({"threat_model": "linf"}, ValueError, r"RobustBench has no threat_model 'linf'; it has \['Linf', 'L2', "
                                           r"'corruptions', 'corruptions_3d'\].*did you mean 'Linf'\?"),
    ({"dataset": "CIFAR10"}, ValueError, r"RobustBench has no dataset 'CIFAR10'.*did you mean 'cifar10'\?"),
    ({"threat_model": "L1", "eps": 12.0}, ValueError,
     r"RobustBench has no threat_model 'L1'.*robust_mix's own harness evaluates L1: robust_mix.benchmark\(model, "
     r"threat_model='L1'"),
    ({"dataset": "fmnist"}, ValueError, r"RobustBench has no dataset 'fmnist'.*robust_mix.benchmark\(model, "
                                        r"dataset='fashion-mnist'"),
    ({"dataset": 10}, TypeError, r"dataset=10 \(int\): RobustBench's benchmark\(\) takes one of"),
    # RobustBench: a bare KeyError 'Res256crop224' (any data set)
    ({"preprocessing": "Res256crop224"}, ValueError, r"RobustBench has no preprocessing 'Res256crop224'; it has "
                                                     r"\['BicubicRes256Crop224', .*did you mean 'Res256Crop224'\?"),
    ({"preprocessing": 3}, TypeError, r"preprocessing=3 \(int\): pass one of RobustBench's names"),
    # RobustBench: "must not be specified", but ignored and recorded with to_disk=True
    ({"threat_model": "corruptions"}, ValueError, r"eps=0.0235.* with threat_model='corruptions': a corruption benchmark "
                                                  r"measures accuracy on corrupted images, with no attack and no budget"),
], ids=["n_examples 0", "n_examples -1", "n_examples 2.5", "batch_size 0", "n_examples beyond the test set", "no eps", "no eps L2",
        "L2 eps in 255ths", "to_disk without model_name", "to_disk a string", "to_disk unwritable",
        "to_disk results file not JSON", "log_path under a file", "log_path a folder",
        "threat model in lower case", "data set in upper case", "L1", "fashion-mnist", "data set a number",
        "preprocessing spelled otherwise", "preprocessing a number", "eps for corruptions"])
def test_benchmark_refuses_arguments_it_would_fail_on_late_before_any_work(tiny_cifar, robustbench_data, tmp_path,
                                                                          changes, error, message):
    """RobustBench checked these after loading the data and scoring the clean pass (eps, log_path), after the whole
    evaluation (to_disk without model_name: the results were lost), or never (n_examples=-1 evaluated 7 images)."""
    import robustbench.eval

    (tmp_path / "a_file").write_text("not a folder")
    if changes.get("model_name") == "blocked":  # the working folder is tmp_path
        (tmp_path / "model_info").write_text("a file where RobustBench makes its results folder")
    if changes.get("model_name") == "broken":
        (tmp_path / "model_info" / "cifar10" / "Linf").mkdir(parents=True)
        (tmp_path / "model_info" / "cifar10" / "Linf" / "broken.json").write_text('{"clean_acc": ')
    settings = dict(n_examples=N, dataset="cifar10", threat_model="Linf", eps=EPS, batch_size=BATCH)
    settings.update({k: v.format(tmp=tmp_path) if isinstance(v, str) and "{tmp}" in v else v
                     for k, v in changes.items()})
    with autoattack_settings(seed=0, configure=reduced_budget), pytest.raises(error, match=message):
        robustbench.eval.benchmark(tiny_cifar[0], **settings)
    assert robustbench_data == []  # refused before the data were loaded


def imagenet_model():
    """A tiny 1000-class mixed model (no declared input shape: it takes RobustBench's 224x224 ImageNet images)."""
    return MixedClassifier(make_tiny(0, num_classes=1000, in_chans=3), make_tiny(1, num_classes=1000, in_chans=3),
                           alpha=0.7)


def test_benchmark_says_where_to_put_cifar_images_it_could_not_download(tiny_cifar, monkeypatch, tmp_path):
    """Offline, RobustBench stopped with a bare ``URLError: <urlopen error [Errno -2] Name or service not known>``."""
    import urllib.error

    import robustbench.data
    import robustbench.eval
    from robustbench.model_zoo.enums import BenchmarkDataset

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setitem(robustbench.data._clean_dataset_loaders, BenchmarkDataset.cifar_10, offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(robust_mix.data.DatasetNotFoundError,
                       match=r"could not load the cifar10 test images from data_dir='.*data' \(.*Name or service not "
                             r"known.*nothing was evaluated.*extract cifar-10-python.tar.gz into '.*data'.*"
                             r"cifar-10-batches-py/"):
        robustbench.eval.benchmark(tiny_cifar[0], n_examples=N, dataset="cifar10", eps=EPS, batch_size=BATCH,
                                   data_dir=str(tmp_path / "data"))


def test_benchmark_says_where_to_put_imagenet_images(monkeypatch, tmp_path):
    """RobustBench answered ``FileNotFoundError: [Errno 2] No such file or directory: '.../val'``."""
    import robustbench.eval

    monkeypatch.chdir(tmp_path)
    with pytest.raises(robust_mix.data.DatasetNotFoundError,
                       match=r"RobustBench never downloads ImageNet; put the ILSVRC2012 validation images in "
                             r"'.*data/val'"):
        robustbench.eval.benchmark(imagenet_model(), n_examples=2, dataset="imagenet", eps=4 / 255, batch_size=2,
                                   data_dir=str(tmp_path / "data"), preprocessing="Res256Crop224")


@pytest.mark.parametrize("threat_model, folder", [("corruptions", "ImageNet-C"), ("corruptions_3d", "ImageNet-3DCC")])
def test_imagenet_corruptions_that_are_not_on_disk_are_refused_before_any_work(monkeypatch, tmp_path, threat_model,
                                                                               folder):
    """RobustBench never downloads ImageNet-C or 3DCC; it failed with a FileNotFoundError only after the clean pass."""
    import robustbench.eval
    from robustbench.data import CORRUPTIONS_DICT
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    monkeypatch.chdir(tmp_path)
    name = "unaggregated_results_3d.csv" if threat_model == "corruptions_3d" else "unaggregated_results.csv"
    (tmp_path / "model_info" / "imagenet" / "corruptions").mkdir(parents=True)
    (tmp_path / "model_info" / "imagenet" / "corruptions" / name).write_text("AlexNet\n")
    loaded = []

    def load_clean_dataset(*args):
        loaded.append(args)
        raise RuntimeError("the clean pass was reached")

    monkeypatch.setattr(robustbench.eval, "load_clean_dataset", load_clean_dataset)
    arguments = dict(n_examples=2, dataset="imagenet", threat_model=threat_model, batch_size=2,
                     data_dir=str(tmp_path / "data"), preprocessing="Res256Crop224")
    with pytest.raises(robust_mix.data.DatasetNotFoundError,
                       match=rf"reads {folder} from '.*data/{folder}'.* folders are not there.*RobustBench does not "
                             rf"download {folder}.*pass corruptions_data_dir="):
        robustbench.eval.benchmark(imagenet_model(), **arguments)
    assert loaded == []
    corruptions = tmp_path / "elsewhere"  # every folder there, under corruptions_data_dir: the check lets it run
    for corruption in CORRUPTIONS_DICT[BenchmarkDataset.imagenet][ThreatModel(threat_model)]:
        for severity in range(1, 6):
            (corruptions / folder / corruption / str(severity)).mkdir(parents=True)
    with pytest.raises(RuntimeError, match="the clean pass was reached"):
        robustbench.eval.benchmark(imagenet_model(), corruptions_data_dir=str(corruptions), **arguments)


def test_a_failed_zenodo_download_of_cifar_corruptions_says_where_to_put_them(monkeypatch, tmp_path):
    """``robustbench.data.load_cifar10c`` offline: a bare ``requests.exceptions.ConnectionError``."""
    import requests
    import robustbench.data
    import robustbench.zenodo_download

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'zenodo.org'")

    monkeypatch.setattr(robustbench.zenodo_download.requests, "get", offline)
    with pytest.raises(robust_mix.data.DatasetNotFoundError,
                       match=r"could not download CIFAR-10-C.tar from Zenodo record 2535967 \(Failed to resolve "
                             r"'zenodo.org'\); download it elsewhere and extract it into '.*data'"):
        robustbench.data.load_cifar10c(2, data_dir=str(tmp_path / "data"))


def test_benchmark_names_the_entry_s_own_budget_when_eps_is_missing(robustbench_data):
    import robustbench.eval

    config = robust_mix.ModelConfig(name="tiny", dataset="cifar10", threat_model="Linf", eps=4 / 255, alpha=0.7)
    model = MixedClassifier(make_tiny(0, in_chans=3), make_tiny(1, in_chans=3), alpha=0.7, config=config)
    with pytest.raises(ValueError, match=r"this model's entry is evaluated at eps=4/255"):
        robustbench.eval.benchmark(model, n_examples=N, dataset="cifar10", threat_model="Linf", batch_size=BATCH)
    assert robustbench_data == []


def test_benchmark_writes_its_log_where_log_path_says(tiny_cifar, robustbench_data, tmp_path):
    import robustbench.eval

    log = tmp_path / "logs" / "run" / "autoattack.log"
    with autoattack_settings(seed=0, configure=reduced_budget):
        robustbench.eval.benchmark(tiny_cifar[0], n_examples=N, dataset="cifar10", eps=EPS, batch_size=BATCH,
                                   log_path=str(log))
    assert log.is_file() and log.read_text().strip()


def test_a_model_whose_config_names_the_data_set_but_whose_bases_do_not_is_not_told_to_pass_that_data_set(
        robustbench_data):
    """The refusal said "pass dataset='cifar10'" to a call that passed dataset='cifar10'."""
    import robustbench.eval

    config = robust_mix.ModelConfig(name="tiny", dataset="cifar10", threat_model="Linf", eps=EPS, alpha=0.7)
    model = MixedClassifier(make_tiny(0, 100, in_chans=3), make_tiny(1, 100, in_chans=3), alpha=0.7, config=config)
    with pytest.raises(ValueError, match=r"scores 100 classes, but dataset='cifar10' has 10: .*its config says "
                                         r"'cifar10' but its bases score 100 classes; mix bases of cifar10") as err:
        robustbench.eval.benchmark(model, n_examples=N, dataset="cifar10", eps=EPS, batch_size=BATCH)
    assert "pass dataset='cifar10'" not in str(err.value) and robustbench_data == []


class Stop(Exception):
    pass


def test_an_imagenet_model_is_benchmarked_with_its_own_preprocessing(monkeypatch, tmp_path):
    """RobustBench stopped with a bare Exception ("Preprocessing should be specified ...") for a robust_mix ImageNet
    model passed without model_name, and with a bare KeyError for a model_name it does not know."""
    import robustbench.data
    import robustbench.eval

    seen = []

    def load_clean_dataset(dataset, n_examples, data_dir, prepr):
        seen.append(prepr)
        raise Stop  # the preprocessing is all this test looks at

    monkeypatch.setattr(robustbench.eval, "load_clean_dataset", load_clean_dataset)
    monkeypatch.chdir(tmp_path)
    own = robust_mix.ModelConfig(name="tiny-imagenet", dataset="imagenet", threat_model="Linf", eps=4 / 255,
                                 alpha=0.7, preprocessing="BicubicRes256Crop224")
    model = MixedClassifier(make_tiny(0, 1000, in_chans=3), make_tiny(1, 1000, in_chans=3), alpha=0.7, config=own)
    settings = dict(n_examples=2, dataset="imagenet", threat_model="Linf", eps=4 / 255, batch_size=2)
    for name in (None, "MyMix"):
        with pytest.raises(Stop):
            robustbench.eval.benchmark(model, model_name=name, **settings)
    assert seen == [robustbench.data.PREPROCESSINGS["BicubicRes256Crop224"]] * 2
    with pytest.raises(Stop):  # one given is used as given
        robustbench.eval.benchmark(model, preprocessing="Res224", **settings)
    assert seen[-1] is robustbench.data.PREPROCESSINGS["Res224"]
    other = MixedClassifier(make_tiny(0, 1000, in_chans=3), make_tiny(1, 1000, in_chans=3), alpha=0.7)
    with pytest.raises(ValueError, match=r"dataset='imagenet' needs to know how its test images are resized and "
                                         r"cropped: pass preprocessing= one of \[.*'BicubicRes256Crop224'.*\].*"
                                         r"model_name='MyMix'"):
        robustbench.eval.benchmark(other, model_name="MyMix", **settings)
    assert len(seen) == 3


def test_corruption_benchmarks_robustbench_cannot_finish_are_refused_before_any_work(tiny_cifar, robustbench_data,
                                                                                     tmp_path):
    """CIFAR-10-C failed with "load_cifar10c() got an unexpected keyword argument 'prepr'" after the clean pass;
    without AlexNet's results under model_info/, any corruption run failed with KeyError 'AlexNet' at its very end."""
    import robustbench.eval

    with pytest.raises(ValueError, match=r"threat_model='corruptions' on dataset='cifar10': RobustBench 1.1.1's "
                                         r"benchmark\(\) cannot load the CIFAR corruption sets"):
        robustbench.eval.benchmark(tiny_cifar[0], n_examples=N, dataset="cifar10", threat_model="corruptions",
                                   batch_size=BATCH)
    imagenet = MixedClassifier(make_tiny(0, 1000, in_chans=3), make_tiny(1, 1000, in_chans=3), alpha=0.7)
    settings = dict(n_examples=N, dataset="imagenet", batch_size=BATCH, preprocessing="Res224")
    for threat, name in (("corruptions", "unaggregated_results.csv"), ("corruptions_3d", "unaggregated_results_3d.csv")):
        with pytest.raises(ValueError, match=rf"compares with AlexNet's results, read from "
                                             rf"'model_info/imagenet/corruptions/{name}' under the working folder"):
            robustbench.eval.benchmark(imagenet, threat_model=threat, **settings)
    assert robustbench_data == []
    reference = tmp_path / "model_info" / "imagenet" / "corruptions" / "unaggregated_results.csv"
    reference.parent.mkdir(parents=True)
    reference.write_text("as in a RobustBench checkout\n")
    with pytest.raises(robust_mix.data.DatasetNotFoundError, match="RobustBench does not download ImageNet-C"):
        robustbench.eval.benchmark(imagenet, threat_model="corruptions", **settings)  # past the reference: the images
    assert robustbench_data == []
