"""robust_mix makes RobustBench importable with the registry's pyautoattack."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_robustbench_model_zoo_imports_through_robust_mix():
    import robust_mix  # noqa: F401

    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    assert "Wong2020Fast" in model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]
    import robustbench.eval

    assert robustbench.eval.AutoAttack is importlib.import_module("pyautoattack").AutoAttack


def test_autoattack_state_is_pyautoattack_state():
    import robust_mix  # noqa: F401

    state = importlib.import_module("autoattack.state")
    assert state is sys.modules["pyautoattack.state"]
    assert hasattr(state, "EvaluationState")



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
