"""Attacks (robust_mix.attacks): harness plans, AutoAttack semantics, adaptive objectives, training-data attacks,
MixedNUTS minimum-margin selection."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import robust_mix
import robust_mix.losses
from robust_mix.attacks import MarginTracker, OutputRecorder, StageRunner, adaptive_apgd, is_mixednuts, pgd
from robust_mix.protocol import ADAPTIVE_STAGES, STANDARD_STAGES, AttackOptions, resolve_attack
from robust_mix.benchmark import benchmark, chunk_seed
from robust_mix.config import PolicyConfig
from robust_mix.losses import dlr_loss_targeted, ratio_bce
from robust_mix.nuts import HardMaxMap, NonlinearLogitMap
from robust_mix.validate import InvalidInputError
from test_benchmark import EPS, FAST, TemplateNet, fmnist

torch.set_num_threads(1)


def adaptive_model() -> robust_mix.MixedClassifier:
    model = robust_mix.MixedClassifier(TemplateNet(0, 6.0), TemplateNet(1, 2.0), alpha=0.5)
    torch.manual_seed(0)
    policy = robust_mix.build_adaptive_policy(model, PolicyConfig(
        ["stage1", "stage2"], ["stage1", "stage2"], widths=[8, 8], blocks=1, input_shape=(1, 28, 28),
        gamma_bias=0.5))
    model.alpha = policy
    return model.eval()


def nuts_model() -> robust_mix.MixedClassifier:
    return robust_mix.MixedClassifier(TemplateNet(0, 6.0), TemplateNet(1, 2.0), alpha=0.9,
                                      standard_map=HardMaxMap(ln_k=10),
                                      robust_map=NonlinearLogitMap(1.0, 2.0, -0.5, ln_k=10)).eval()


def runner_for(model, **options) -> StageRunner:
    return StageRunner(model, resolve_attack("standard", adaptive=True), norm="Linf", eps=EPS, device="cpu",
                       options=AttackOptions(**options))


# -- plans ---------------------------------------------------------------------------------------
def test_attack_plans():
    standard = resolve_attack("standard")
    assert standard.version == "standard" and standard.suites == {"autoattack": list(STANDARD_STAGES)}
    assert STANDARD_STAGES == ("apgd-ce", "apgd-t", "fab-t", "square")
    both = resolve_attack("standard", adaptive=True)
    assert both.suites == {"autoattack": list(STANDARD_STAGES), "adaptive": list(ADAPTIVE_STAGES)}
    assert both.name == "standard+adaptive"
    assert resolve_attack("adaptive").suites == {"adaptive": list(ADAPTIVE_STAGES)}
    assert resolve_attack("rand").version == "rand" and resolve_attack("rand").stages == ["apgd-ce", "apgd-dlr"]
    assert resolve_attack(" rand ").version == "rand" and resolve_attack("standard\n").name == "standard"
    custom = resolve_attack("apgd-ce, apgd-t")
    assert custom.version == "standard" and custom.stages == ["apgd-ce", "apgd-t"]
    with pytest.raises(ValueError, match="unknown attack stage"):
        resolve_attack("apgd-ce,pgd")
    with pytest.raises(ValueError, match="repeat"):
        resolve_attack("apgd-ce,apgd-ce")
    for bad in (None, 5, {"apgd-ce"}, ["apgd-ce", 3]):
        with pytest.raises(TypeError, match=r"attack must be one of \['standard', 'rand', 'adaptive'\] or a list"):
            resolve_attack(bad)


def test_the_adaptive_flag_beside_a_list_naming_part_of_the_adaptive_suite_is_refused():
    """attack='apgd-ce,adaptive-apgd-ce' with adaptive=True (--adaptive) ran the adaptive APGD-CE alone, without a
    word, though the flag asked for the adaptive suite."""
    with pytest.raises(ValueError, match=r"adaptive=True \(--adaptive\) adds the adaptive suite \['adaptive-apgd-ce', "
                                         r"'adaptive-apgd-t'\], but attack 'apgd-ce,adaptive-apgd-ce' already lists "
                                         r"\['adaptive-apgd-ce'\]"):
        resolve_attack("apgd-ce,adaptive-apgd-ce", adaptive=True)
    assert resolve_attack("apgd-ce,adaptive-apgd-ce").stages == ["apgd-ce", "adaptive-apgd-ce"]
    # naming the whole suite with the flag beside it asks for the same run
    assert resolve_attack("adaptive", adaptive=True) == resolve_attack("adaptive")
    assert resolve_attack("apgd-ce,adaptive-apgd-t,adaptive-apgd-ce", adaptive=True).suites == {
        "autoattack": ["apgd-ce"], "adaptive": ["adaptive-apgd-t", "adaptive-apgd-ce"]}


@pytest.mark.parametrize("attack, message", [
    ("APGD-CE,FAB-T", "unknown attack stage(s) ['APGD-CE', 'FAB-T'] (names are lower case with '-': did you mean "
                      "'apgd-ce', 'fab-t'?)"),
    ("Standard", "did you mean 'standard'?"),
    ("apgd_t", "did you mean 'apgd-t'?"),
    ("standard,apgd-dlr", "unknown attack stage(s) ['standard'] (a preset runs alone, not in a list: 'standard' is "
                          "['apgd-ce', 'apgd-t', 'fab-t', 'square']"),
    ([], "attack [] names no stage; use one of"),
    (",", "attack ',' names no stage"),
    ("plus", "'plus' is a pyautoattack version the harness does not run: list its stages, "
             "attack='apgd-ce,apgd-dlr,fab,square,apgd-t,fab-t'"),
    (["Plus"], "'Plus' is a pyautoattack version the harness does not run"),
    ("custom", "'custom' is a pyautoattack version the harness does not run: list the stages to run"),
])
def test_unknown_stage_names_say_what_was_meant(attack, message):
    with pytest.raises(ValueError) as err:
        resolve_attack(attack)
    assert message in str(err.value)


def test_default_budgets_are_the_leaderboards():
    settings = runner_for(adaptive_model()).attack_settings()
    assert settings["apgd"] == {"n_iter": 100, "n_restarts": 1, "eot_iter": 1}
    assert settings["apgd-t"] == {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9}
    assert settings["fab"]["n_target_classes"] == 9 and settings["square"]["n_queries"] == 5000
    assert settings["adaptive"]["n_iter"] == 100 and settings["adaptive"]["n_target_classes"] == 9
    reduced = runner_for(adaptive_model(), n_iter=10, n_queries=30).attack_settings()
    assert reduced["apgd"]["n_iter"] == 10 and reduced["square"]["n_queries"] == 30
    rand = StageRunner(adaptive_model(), resolve_attack("rand"), norm="Linf", eps=EPS, device="cpu")
    assert rand.attack_settings()["apgd"]["eot_iter"] == 20


@pytest.mark.parametrize("norm, options, stages, changed", [
    ("Linf", dict(n_target_classes=9, n_iter=100, n_queries=5000), ["apgd-t", "fab-t", "square"], {}),
    ("Linf", dict(n_target_classes=9, n_iter=5), ["apgd-ce", "apgd-t"], {"n_iter": 5}),
    ("L1", dict(n_target_classes=9), ["apgd-t"], {"n_target_classes": 9}),  # L1's APGD-T aims at 5 classes
    ("L1", dict(n_target_classes=9), ["fab-t"], {}),  # FAB-T's are 9 under every norm
    ("L1", dict(n_restarts=5), ["apgd-ce"], {}),
    ("Linf", dict(n_restarts=5), ["apgd-ce"], {"n_restarts": 5}),
    ("Linf", dict(n_queries=20), ["apgd-ce"], {}),  # no stage uses it
    ("Linf", dict(adaptive_weight=0.0), ["adaptive-apgd-ce"], {"adaptive_weight": 0.0}),  # another objective
    ("L2", dict(adaptive_weight=0.4), ["adaptive-apgd-t"], {"adaptive_weight": 0.4}),
    ("Linf", dict(adaptive_weight=0.2), ["adaptive-apgd-ce"], {}),  # the protocol's own w
    ("Linf", dict(adaptive_weight=0.0), ["apgd-ce", "square"], {}),  # no adaptive stage
])
def test_an_override_counts_only_where_it_changes_a_budget_of_the_stages_that_run(norm, options, stages, changed):
    """--n-target-classes 9 on a 10-class model (the leaderboard's own 9 targets, as docs/harness.md recommends) was
    recorded as a reduced budget: the report was partial and submit refused it."""
    runner = StageRunner(adaptive_model(), resolve_attack("standard", adaptive=True), norm=norm, eps=EPS, device="cpu",
                         options=AttackOptions(**options))
    assert runner.budget_changes(stages) == changed


def test_a_run_with_the_leaderboard_s_own_budgets_passed_is_not_called_reduced():
    from robust_mix.formatting import partial_reasons

    x, y = fmnist(4)
    result = benchmark(adaptive_model(), images=x, labels=y, eps=EPS, batch_size=4, attack="apgd-ce,apgd-t",
                       device="cpu", options=AttackOptions(n_iter=2, n_target_classes=9))
    assert result.options == {"n_iter": 2}
    assert "attack budgets changed from the protocol's (n_iter=2)" in partial_reasons(result)


def test_an_adaptive_attack_on_another_objective_is_not_reported_as_the_protocol_s():
    """AttackOptions(adaptive_weight=0) dropped the BCE(gamma) term of the adaptive attack, yet the report recorded
    no override: it was leaderboard-grade, labelled as the protocol's adaptive attack and compared with its
    reference rows."""
    from robust_mix.formatting import attack_label, partial_reasons

    x, y = fmnist(2)
    result = benchmark(adaptive_model(), images=x, labels=y, eps=EPS, batch_size=2, attack="adaptive", device="cpu",
                       options=AttackOptions(adaptive_weight=0.0, n_iter=2, n_target_classes=9))
    assert result.options == {"n_iter": 2, "adaptive_weight": 0.0} and not result.leaderboard_grade
    assert result.attack_settings["adaptive"]["bce_weight"] == 0.0
    assert "adaptive APGD-CE (2 iter, BCE weight 0)" in attack_label(result)
    assert "attack budgets changed from the protocol's (n_iter=2, adaptive_weight=0.0)" in partial_reasons(result)


@pytest.mark.parametrize("attack, norm, eot, restarts", [("standard", "Linf", 1, 1), ("rand", "Linf", 20, 1),
                                                         ("standard", "L1", 1, 5)])
def test_the_adaptive_settings_record_the_eot_and_restarts_the_adaptive_stages_run_with(attack, norm, eot, restarts):
    """The adaptive stages take APGD's EOT and restarts (EOT 20 under attack='rand', 5 restarts under L1): the report
    said neither, so a rand run's adaptive stages looked like single-sample attacks."""
    runner = StageRunner(adaptive_model(), resolve_attack(attack, adaptive=True), norm=norm, eps=EPS, device="cpu")
    settings = runner.attack_settings()["adaptive"]
    assert (settings["eot_iter"], settings["n_restarts"]) == (eot, restarts)
    assert (runner.adaptive_ce.eot_iter, runner.adaptive_t.eot_iter, runner.adaptive_ce.n_restarts) == (eot, eot,
                                                                                                          restarts)
    reduced = StageRunner(adaptive_model(), resolve_attack(attack, adaptive=True), norm=norm, eps=EPS, device="cpu",
                          options=AttackOptions(eot_iter=3, n_restarts=2)).attack_settings()["adaptive"]
    assert (reduced["eot_iter"], reduced["n_restarts"]) == (3, 2)


def test_a_rand_runs_report_and_labels_say_its_adaptive_stages_use_eot(tmp_path):
    from robust_mix.formatting import attack_label
    from robust_mix.report import write_report

    x, y = fmnist(4)
    result = benchmark(adaptive_model(), images=x, labels=y, eps=EPS, batch_size=4, attack="rand", adaptive=True,
                       options=AttackOptions(n_iter=2), device="cpu")
    assert result.attack_settings["adaptive"]["eot_iter"] == 20
    label = attack_label(result)
    assert label == ("APGD-CE (2 iter, EOT 20) + APGD-DLR (2 iter, EOT 20) + adaptive APGD-CE (2 iter, EOT 20) + "
                     "adaptive APGD-T (2 iter, 9 targets, EOT 20)")
    paths = write_report(tmp_path, result)
    assert "adaptive APGD-CE (2 iter, EOT 20)" in paths["markdown"].read_text()
    assert json.loads(paths["report"].read_text())["attack_settings"]["adaptive"]["eot_iter"] == 20


def test_harness_matches_pyautoattack_called_directly():
    """One chunk holding every example = pyautoattack's own cascade with the chunk's seed."""
    from pyautoattack import AutoAttack

    x, y = fmnist(12)
    model = robust_mix.MixedClassifier(TemplateNet(0, 6.0), TemplateNet(1, 2.0), alpha=0.6).eval()
    ours = benchmark(model, images=x, labels=y, eps=EPS, batch_size=12, attack="apgd-ce,apgd-t", seed=7,
                     options=FAST, device="cpu")
    aa = AutoAttack(model, norm="Linf", eps=EPS, version="standard", device="cpu", seed=chunk_seed(7, 0))
    aa.attacks_to_run = ["apgd-ce", "apgd-t"]
    for attack in (aa.apgd, aa.apgd_targeted):
        robust_mix.attacks.set_apgd_iterations(attack, 8)
    aa.apgd_targeted.n_target_classes = 2
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=12)
    with torch.no_grad():
        direct = (model(x_adv).argmax(1) == y).tolist()
    assert ours.robust_flags == direct
    assert ours.robust_accuracy < ours.clean_accuracy


@pytest.mark.parametrize("threat_model, eps, attack", [
    ("L2", 2.0, "apgd-ce,fab-t,square"),
    ("L2", 2.0, "rand"),
    ("Linf", 0.15, "apgd-dlr,fab,square"),
    ("L1", 40.0, "apgd-t"),
])
def test_harness_matches_pyautoattack_under_other_attacks_and_norms(threat_model, eps, attack):
    """Other stages, the rand version and the L2 / L1 threat models: the harness's flags are pyautoattack's own
    cascade on the same model, images, norm, eps (an L2 budget of 2, as it is: not 2/255, not clamped to 1) and
    seed, with the same budgets."""
    from pyautoattack import AutoAttack

    x, y = fmnist(8)
    model = robust_mix.MixedClassifier(TemplateNet(0, 6.0), TemplateNet(1, 2.0), alpha=0.6).eval()
    ours = benchmark(model, images=x, labels=y, threat_model=threat_model, eps=eps, batch_size=8, attack=attack,
                     seed=5, device="cpu", options=AttackOptions(n_iter=4, n_target_classes=2, n_queries=30))
    plan = resolve_attack(attack)
    aa = AutoAttack(model, norm=threat_model, eps=eps, version=plan.version, device="cpu", seed=chunk_seed(5, 0))
    aa.attacks_to_run = plan.stages
    for apgd in (aa.apgd, aa.apgd_targeted):
        robust_mix.attacks.set_apgd_iterations(apgd, 4)
    aa.fab.n_iter, aa.fab.n_target_classes, aa.apgd_targeted.n_target_classes, aa.square.n_queries = 4, 2, 2, 30
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=8)
    with torch.no_grad():
        direct = (model(x_adv).argmax(1) == y).tolist()
    assert ours.robust_flags == direct
    assert (ours.threat_model, ours.eps, ours.arguments["eps"]) == (threat_model, eps, eps)
    assert all(clean for clean, robust in zip(ours.clean_flags, ours.robust_flags) if robust)
    assert 0 < ours.robust_accuracy < ours.clean_accuracy  # the attack found some, not all: the flags say something


def test_small_standard_version_runs_all_four_stages():
    x, y = fmnist(8)
    result = benchmark(robust_mix.MixedClassifier(TemplateNet(0, 6.0), TemplateNet(1, 2.0), alpha=0.6),
                       images=x, labels=y, eps=EPS, batch_size=8, attack="standard", device="cpu",
                       options=AttackOptions(n_iter=5, n_target_classes=2, n_queries=20))
    accs = [result.clean_accuracy] + [result.stage_accuracy[s] for s in STANDARD_STAGES]
    assert list(result.stage_accuracy) == list(STANDARD_STAGES)
    assert accs == sorted(accs, reverse=True) and result.robust_accuracy == accs[-1]


# -- the adaptive objective ------------------------------------------------------------------------
@pytest.mark.parametrize("targeted", [False, True])
def test_adaptive_objective_contains_the_bce_term(targeted):
    model = adaptive_model()
    runner = runner_for(model, adaptive_weight=0.3)
    attack = runner.adaptive_t if targeted else runner.adaptive_ce
    x, y = fmnist(6)
    log_probs = runner.recorder(x)
    out = runner.recorder.last
    assert out.gamma is not None
    if targeted:
        attack.y_target = log_probs.sort(dim=1)[1][:, -2]
        loss = attack.dlr_loss_targeted(log_probs, y)
        main = dlr_loss_targeted(out.log_probs, y, attack.y_target)
    else:
        loss = attack.dlr_loss(log_probs, y)
        main = F.nll_loss(out.log_probs, y, reduction="none")
    bce = ratio_bce(out.gamma, 1.0)
    torch.testing.assert_close(loss, 0.7 * main + 0.3 * bce)
    assert (bce > 1e-3).all()  # the term is really there, not vanishing
    # and it is differentiable through gamma into the input
    xg = x.clone().requires_grad_(True)
    attack.weight = 1.0
    lp = runner.recorder(xg)
    if targeted:
        attack.y_target = lp.detach().sort(dim=1)[1][:, -2]
    full = (attack.dlr_loss_targeted(lp, y) if targeted else attack.dlr_loss(lp, y)).sum()
    grad, = torch.autograd.grad(full, xg)
    assert grad.abs().sum() > 0


def test_steep_calibration_cannot_mute_the_ratio_term():
    """A steep calibrated policy (large gamma scale and bias) saturates BCE(gamma, 1): its input
    gradient fades like exp(-gamma). With ``unscaled`` the term is on the calibration-free logit, so
    its gradient is the same whatever the constants; by default it is the paper's, on gamma."""
    x, y = fmnist(6)

    def ratio_gradient(model, unscaled):
        xg = x.clone().requires_grad_(True)
        out = OutputRecorder(model).full_output(xg)
        gamma = out.gamma_unscaled if unscaled else out.gamma
        grad, = torch.autograd.grad(ratio_bce(gamma, 1.0).sum(), xg)
        return grad

    flat, steep = adaptive_model(), adaptive_model()
    steep.policy.config.gamma_scale, steep.policy.config.gamma_bias = 8.0, 10.0
    runner = runner_for(steep, adaptive_weight=1.0)
    assert not runner.adaptive_ce.unscaled and not runner.adaptive_t.unscaled
    torch.testing.assert_close(ratio_gradient(steep, True), ratio_gradient(flat, True))
    assert ratio_gradient(steep, False).abs().sum() < 1e-3 * ratio_gradient(flat, True).abs().sum()
    log_probs = runner.recorder(x)
    torch.testing.assert_close(runner.adaptive_ce.dlr_loss(log_probs, y), ratio_bce(runner.recorder.last.gamma, 1.0))
    runner.adaptive_ce.unscaled = True
    log_probs = runner.recorder(x)
    torch.testing.assert_close(runner.adaptive_ce.dlr_loss(log_probs, y),
                               ratio_bce(runner.recorder.last.gamma_unscaled, 1.0))


def test_buffer_attack_uses_the_calibrated_gamma(monkeypatch):
    seen = []
    original = robust_mix.losses.adaptive_attack_loss

    def recording(out, labels, **kwargs):
        seen.append(kwargs.get("unscaled"))
        return original(out, labels, **kwargs)

    monkeypatch.setattr(robust_mix.attacks, "adaptive_attack_loss", recording)
    x, y = fmnist(4)
    adaptive_apgd(adaptive_model(), x, y, eps=EPS, n_iter=2)
    assert seen and not any(seen)


def test_both_adaptive_attacks_evaluate_the_bce_term_while_attacking(monkeypatch):
    calls = {"n": 0}
    original = robust_mix.losses.ratio_bce

    def counting(gamma, target):
        calls["n"] += 1
        return original(gamma, target)

    monkeypatch.setattr(robust_mix.losses, "ratio_bce", counting)
    runner = runner_for(adaptive_model(), n_iter=4, n_target_classes=2)
    x, y = fmnist(6)
    for stage in ("adaptive-apgd-ce", "adaptive-apgd-t"):
        calls["n"] = 0
        x_adv = runner.run(stage, x, y, seed=0)
        assert calls["n"] >= 5, stage  # initial point + every iteration
        assert (x_adv - x).abs().max() <= EPS + 1e-6


def test_recorder_refuses_stale_outputs():
    recorder = OutputRecorder(adaptive_model())
    x, _ = fmnist(2)
    first = recorder(x)
    recorder(x)
    with pytest.raises(RuntimeError, match="last forward"):
        recorder.output_for(first)


def test_adaptive_attack_on_a_plain_classifier_is_cross_entropy():
    net = TemplateNet(0, 6.0)
    runner = StageRunner(net, resolve_attack("adaptive"), norm="Linf", eps=EPS, device="cpu")
    x, y = fmnist(4)
    logits = runner.recorder(x)
    torch.testing.assert_close(runner.adaptive_ce.dlr_loss(logits, y),
                               F.cross_entropy(net(x), y, reduction="none"))


@pytest.mark.parametrize("classes, attack, options, match", [
    (2, "apgd-dlr", {}, "apgd-dlr attack needs at least 3"),
    (3, "apgd-ce,apgd-t", {"n_target_classes": 2}, "apgd-t attack needs at least 4"),
    (3, "adaptive", {"n_target_classes": 2}, "adaptive-apgd-t attack needs at least 4"),
    (5, "standard", {}, r"apgd-t attack aims at 9 target classes.*n_target_classes=4"),
    (2, "fab-t", {}, r"fab-t attack aims at 9 target classes.*n_target_classes=1"),
])
def test_stages_a_model_has_too_few_classes_for_are_refused_before_any_work(tmp_path, classes, attack, options,
                                                                           match):
    """pyautoattack only warns, then failed mid-run with a bare IndexError ('index -6 is out of bounds')."""
    from conftest import make_tiny

    net = make_tiny(1, num_classes=classes, in_chans=1)
    x, _ = fmnist(4)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    with pytest.raises(InvalidInputError, match=match):
        benchmark(net, images=x, labels=y, eps=EPS, attack=attack, device="cpu", state_dir=tmp_path,
                  options=AttackOptions(n_iter=2, n_queries=5, **options))
    assert not (tmp_path / "run.json").exists()


def test_every_other_class_as_targets_runs_on_a_model_with_few_classes():
    from conftest import make_tiny

    net = make_tiny(1, num_classes=5, in_chans=1)
    x, _ = fmnist(4)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    result = benchmark(net, images=x, labels=y, eps=EPS, attack="standard", device="cpu",
                       options=AttackOptions(n_iter=2, n_queries=5, n_target_classes=4))
    assert result.stages == list(STANDARD_STAGES) and result.attack_settings["apgd-t"]["n_target_classes"] == 4


@pytest.mark.parametrize("model, warns", [(lambda: TemplateNet(0, 6.0), True),
                                          (lambda: robust_mix.MixedClassifier(TemplateNet(0, 6.0), TemplateNet(1, 2.0),
                                                                              alpha=0.7), True),
                                          (adaptive_model, False), (nuts_model, False)])
def test_adaptive_stages_on_a_model_without_a_ratio_to_attack_say_so(caplog, model, warns):
    """--adaptive on a fixed ratio or a plain classifier ran plain APGD again under the name 'adaptive' silently."""
    x, y = fmnist(2)
    with caplog.at_level("WARNING", logger="robust_mix.benchmark"):
        benchmark(model().eval(), images=x, labels=y, eps=EPS, attack="apgd-ce", adaptive=True, device="cpu",
                  options=AttackOptions(n_iter=1, n_target_classes=1))
    assert ("APGD-CE and targeted APGD-DLR once more" in caplog.text) == warns


# -- MixedNUTS -------------------------------------------------------------------------------------
def test_margin_tracker_keeps_the_smallest_exact_margin_per_example():
    model = nuts_model()
    x, y = fmnist(4)
    tracker = MarginTracker(model, x, y)
    candidates = [x, (x + 0.1).clamp(0, 1), (x - 0.1).clamp(0, 1)]
    margins = torch.stack([tracker.exact_margin(c) for c in candidates])
    for c in candidates:
        tracker.update(c)
    best = margins.argmin(0)
    torch.testing.assert_close(tracker.margin, margins.min(0).values)
    for i in range(4):
        torch.testing.assert_close(tracker.x_min[i], candidates[best[i]][i])


def test_mixednuts_adaptive_attack_uses_surrogate_gradients_and_min_margin_selection(monkeypatch):
    model = nuts_model()
    assert is_mixednuts(model) and not is_mixednuts(adaptive_model())
    runner = runner_for(model, n_iter=6, n_target_classes=2)
    assert runner.adaptive_ce.select_min_margin and runner.adaptive_t.select_min_margin
    updates = {"n": 0}
    original = MarginTracker.update

    def counting(self, x):
        updates["n"] += 1
        return original(self, x)

    monkeypatch.setattr(MarginTracker, "update", counting)
    x, y = fmnist(10)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct], y[correct]
    x_adv = runner.run("adaptive-apgd-ce", x, y, seed=1)
    assert updates["n"] >= 7
    # surrogate gradients exist (the exact hard-max map has none)
    xg = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.nll_loss(model(xg), y), xg)
    assert grad.abs().sum() > 0
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert fooled.any()
    assert (x_adv - x).abs().max() <= EPS + 1e-6


# -- attacks that produce training data ------------------------------------------------------------
def test_pgd_stays_in_ball_and_increases_loss():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 4, 4)
    x = torch.rand(5, 1, 4, 4)
    loss_fn = lambda z: (z * w).sum(dim=(1, 2, 3))  # noqa: E731
    eps = torch.tensor([0.0, 0.05, 0.1, 0.1, 0.2])
    adv = pgd(loss_fn, x, eps, steps=5, random_start=True, generator=torch.Generator().manual_seed(0))
    assert ((adv - x).abs().amax(dim=(1, 2, 3)) <= eps + 1e-6).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert (loss_fn(adv)[1:] > loss_fn(x)[1:]).all()
    with torch.no_grad():  # callers under no_grad still get an attack
        assert torch.equal(pgd(loss_fn, x, eps, 5, generator=torch.Generator().manual_seed(0)), adv)


def test_adaptive_apgd_per_example_radius_weight_and_target():
    model = adaptive_model()
    x, y = fmnist(8)
    eps = torch.linspace(0.02, 0.1, 8)
    state = torch.random.get_rng_state()
    adv = adaptive_apgd(model, x, y, eps=eps, n_iter=5, weight=0.0, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert ((adv - x).abs().amax(dim=(1, 2, 3)) <= eps + 1e-6).all()
    assert torch.equal(adv, adaptive_apgd(model, x, y, eps=eps, n_iter=5, weight=0.0, seed=3))
    with torch.no_grad():
        ce = lambda z: F.nll_loss(model(z), y, reduction="none")  # noqa: E731
        assert ce(adv).mean() > ce(x).mean()
        # all the weight on BCE(gamma, 1): the attack pushes alpha down instead
        towards_standard = adaptive_apgd(model, x, y, eps=0.1, n_iter=5, weight=1.0, seed=3)
        assert model.forward_all(towards_standard).alpha.mean() < model.forward_all(x).alpha.mean()
        target = model(x).argsort(1, descending=True)[:, 1]
        targeted = adaptive_apgd(model, x, y, eps=0.1, n_iter=5, weight=0.0, targets=target, seed=3)
        assert dlr_loss_targeted(model(targeted), y, target).mean() > dlr_loss_targeted(model(x), y, target).mean()
