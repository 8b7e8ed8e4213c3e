"""robust_mix makes RobustBench importable with the registry's pyautoattack."""
import importlib
import sys


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
