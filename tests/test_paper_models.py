"""The paper's six models compute exactly what RobustBench's copies compute.

For each entry, RobustBench's own model is built on the CPU with random weights, calibrated so
that its output is confident and input-dependent (BatchNorm statistics from random images, class
logits centred and sharpened), written into a temporary ``model_dir`` in RobustBench's file
layout, and loaded back through ``robust_mix.load_model(name, model_dir=...)``. Both then see
the same random images.

Cost: ``cifar100-adasmooth`` and ``imagenet-mixednuts`` are tested at full size. The other four
entries are tested at reduced size through the same conversion code: RobustBench's constructors
are patched to build BiT-R50x1 instead of BiT-R152x2, WRN-10-4 instead of WRN-70-16, a one-block,
narrow RA-WRN instead of Peng2023Robust's, and a mixing network sized for their channels, all with
the same module names and checkpoint layouts; our side uses timm's ``resnetv2_50x1_bit``, the same
patched RobustBench factories and the matching mixing-network widths.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robust_mix
from robust_mix import BackboneNotFoundError, get_model_config, list_models, load_model
from robust_mix.weights import robustbench_files
from robust_mix.config import ModelConfig

from robustbench.model_zoo import cifar10 as rb_cifar10, cifar100 as rb_cifar100  # noqa: E402
from robustbench.model_zoo.architectures import bit_rn, bit_rn_v2, comp_model, dm_rn  # noqa: E402
from robustbench.model_zoo.architectures.dm_wide_resnet import DMWideResNet  # noqa: E402
from robustbench.model_zoo.architectures.robustarch_wide_resnet import (  # noqa: E402
    CIFAR10_MEAN, CIFAR10_STD, NormalizedWideResNet)

PAPER_MODELS = ["cifar100-adasmooth", "cifar100-adasmooth-trades", "cifar10-adasmooth",
                "cifar10-mixednuts", "cifar100-mixednuts", "imagenet-mixednuts"]
FULL_SIZE = {"cifar100-adasmooth", "imagenet-mixednuts"}
BATCH = 3
REDUCED_WRN = {"depth": 10, "width": 4}
REDUCED_WIDTHS = [384, 640, 1024]  # RobustBench's MixingNetV4 widths for in_planes (256, 64)


# -- RobustBench on the CPU, at full or reduced size ------------------------------------------------
@contextlib.contextmanager
def robustbench_on_cpu(reduced: bool) -> Iterator[None]:
    """Neutralise RobustBench's ``.cuda()`` calls; with ``reduced``, shrink its base models."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
        if reduced:
            for module in (bit_rn, bit_rn_v2):
                mp.setitem(module.KNOWN_MODELS, "BiT-M-R152x2",
                           lambda *a, _m=module, **kw: _m.ResNetV2([3, 4, 6, 3], 1, *a, **kw))
            # First stages of 256 (BiT-R50x1) and 64 (WRN-10-4) channels, not 512 and 256: size
            # RobustBench's mixing net for them (ours: REDUCED_WIDTHS).
            mixing_v4 = comp_model.MixingNetV4
            mp.setattr(comp_model, "MixingNetV4", lambda fs: mixing_v4({**fs, "in_planes": (256, 64)}))
            wide_resnet = dm_rn.WideResNet
            mp.setattr(dm_rn, "WideResNet", lambda **kw: wide_resnet(**{**kw, **REDUCED_WRN}))
            for module in (comp_model, rb_cifar10, rb_cifar100):
                mp.setattr(module, "DMWideResNet", lambda **kw: DMWideResNet(**{**kw, **REDUCED_WRN}))
            small_ra = lambda name: NormalizedWideResNet(  # noqa: E731  (Peng2023Robust, 1 block a stage)
                CIFAR10_MEAN, CIFAR10_STD, stem_width=16, depth=[1, 1, 1], stage_width=[32, 64, 128],
                groups=[1, 1, 1], activation_fn=nn.SiLU, se_ratio=0.25, se_activation=nn.ReLU,
                se_order=2, num_classes=10)
            for module in (comp_model, rb_cifar10):
                mp.setattr(module, "get_robustarch_model", small_ra)
        yield


def build_robustbench(config: ModelConfig) -> nn.Module:
    """RobustBench's own model for an entry (random weights)."""
    dataset, _, rb_id = config.robust.weights.robustbench.split("/")
    if rb_id.startswith("Bai2023Improving_"):
        return comp_model.get_composite_model(rb_id.split("_", 1)[1], dataset)
    return comp_model.get_nonlin_mixed_classifier(dataset)


def _logits(output):
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def calibrate_bn(model: nn.Module, run: Callable[[], object]) -> None:
    """Set every BatchNorm's running statistics to those of the batch ``run`` feeds through ``model``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    run()
    for norm in norms:
        norm.eval()


@torch.no_grad()
def sharpen_head(model: nn.Module, logits: torch.Tensor, target_std: float, boost: bool = False) -> None:
    """Rescale ``model``'s classifier so that ``logits`` (its output on a calibration batch) become
    centred with per-class std ``target_std``; with ``boost``, a few classes dominate, giving the
    heavy-tailed logits of trained models that MixedNUTS's scale-blind map needs to be confident."""
    num_classes = logits.shape[1]
    head = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
            and m.weight.shape[0] == num_classes][-1]
    mean, std = logits.float().mean(0), logits.float().std(0).mean()
    head.weight.mul_(target_std / std)
    head.bias.sub_(mean.reshape(head.bias.shape)).mul_(target_std / std)
    if boost:
        boosted = max(2, num_classes // 20)
        head.weight[:boosted].mul_(4.0)
        head.bias[:boosted].mul_(4.0)


@torch.no_grad()
def calibrate(rb: nn.Module, x: torch.Tensor) -> None:
    """Make the random RobustBench model confident and input-dependent, as trained models are.

    One forward pass: BatchNorm statistics (robust base, mixing network, gamma) from ``x``, and
    the base models' logits on ``x`` to rescale their classifiers.
    """
    composite = getattr(rb, "comp_model", None)
    bases = list(composite.models) if composite is not None else [rb.std_model, rb.rob_model]
    logits: list[torch.Tensor] = [None, None]
    hooks = [m.register_forward_hook(lambda _m, _i, out, i=i: logits.__setitem__(i, _logits(out)))
             for i, m in enumerate(bases)]
    if composite is not None:
        calibrate_bn(nn.ModuleList([bases[1], composite.policy_net, composite.bn]), lambda: composite(x))
    else:
        calibrate_bn(bases[1], lambda: rb(x))
    for hook in hooks:
        hook.remove()
    sharpen_head(bases[0], logits[0], 0.5)
    sharpen_head(bases[1], logits[1], 3.0, boost=True)


def random_images(n: int, side: int, gen: torch.Generator) -> torch.Tensor:
    """Images in [0, 1] whose colours and layout differ from image to image.

    Pixel noise alone averages out in deep networks: every such image gets nearly the same
    features, so a random network's output would barely depend on its input.
    """
    coarse = F.interpolate(torch.rand(n, 3, 4, 4, generator=gen), size=(side, side), mode="bilinear")
    return (0.75 * coarse + 0.25 * torch.rand(n, 3, side, side, generator=gen)).clamp(0, 1)


def write_robustbench_files(rb: nn.Module, config: ModelConfig, model_dir: Path) -> list[Path]:
    """Save ``rb``'s tensors as RobustBench's ``<Name>.pt_m<i>.pt`` files (its own layout)."""
    dataset, threat, rb_id = config.robust.weights.robustbench.split("/")
    paths = [p for p, _ in robustbench_files(dataset, threat, rb_id, model_dir)]
    if hasattr(rb, "comp_model"):
        comp = rb.comp_model
        states = [comp.models[0].state_dict(), comp.models[1].state_dict(),
                  {"model": comp.policy_net.state_dict(), "bn": comp.bn.state_dict()}]
    else:
        # RobustBench keeps the ImageNet Swin's file without its normalising wrapper's prefix.
        rob = rb.rob_model.model if dataset == "imagenet" else rb.rob_model
        states = [rb.std_model.state_dict(), rob.state_dict()]
    assert len(paths) == len(states)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path, state in zip(paths, states):
        torch.save(state, path)
    return paths


@torch.no_grad()
def robustbench_forward(rb: nn.Module, config: ModelConfig, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RobustBench's log mixed probabilities ``(B, K)`` and per-example alpha ``(B,)``."""
    if hasattr(rb, "comp_model"):
        comp = rb.comp_model
        log_probs, gamma = comp(x)
        return log_probs.float(), torch.sigmoid(gamma) * comp.alpha_scale + comp.alpha_bias
    return rb(x).float(), rb._alpha.expand(x.shape[0])


class Pair(NamedTuple):
    name: str
    config: ModelConfig
    robustbench: nn.Module
    ours: robust_mix.MixedClassifier
    images: torch.Tensor
    model_dir: Path
    ref_log_probs: torch.Tensor
    ref_alpha: torch.Tensor


def build_pair(name: str, model_dir: Path) -> Pair:
    config = get_model_config(name)
    reduced = name not in FULL_SIZE
    side = 224 if config.dataset == "imagenet" else 32
    gen = torch.Generator().manual_seed(1)
    calibration = random_images(4, side, gen)
    images = random_images(BATCH, side, gen)
    with robustbench_on_cpu(reduced):
        torch.manual_seed(0)
        rb = build_robustbench(config).eval()
        calibrate(rb, calibration)
        write_robustbench_files(rb, config, model_dir)
        overrides = {}
        if reduced:
            overrides["standard"] = dataclasses.replace(config.standard, ref="timm/resnetv2_50x1_bit")
            if config.policy is not None:
                overrides["widths"] = REDUCED_WIDTHS
        torch.manual_seed(123)  # our random initialisation differs from RobustBench's
        ours = load_model(name, model_dir=model_dir, **overrides)
    return Pair(name, config, rb, ours, images, model_dir, *robustbench_forward(rb, config, images))


def compare(pair: Pair, ours_input: torch.Tensor) -> dict[str, float]:
    """Largest differences between RobustBench (on ``pair.images``) and ours (on ``ours_input``)."""
    ref_lp, ref_alpha = pair.ref_log_probs, pair.ref_alpha
    with torch.no_grad():
        out = pair.ours.forward_all(ours_input)
    finite = ref_lp > -30  # RobustBench takes log(p) of float32 probabilities that may underflow
    return {
        "pred_mismatch": float((ref_lp.argmax(1) != out.log_probs.argmax(1)).sum()),
        "log_prob": float((ref_lp - out.log_probs)[finite].abs().max()),
        "prob": float((ref_lp.exp() - out.log_probs.exp()).abs().max()),
        "alpha": float((ref_alpha - out.alpha).abs().max()),
        "ref_alpha_spread": float(ref_alpha.max() - ref_alpha.min()),
        "ref_confidence": float(ref_lp.exp().max(1).values.mean()),
        "ref_distinct_preds": float(ref_lp.argmax(1).unique().numel()),
    }


def matches(diff: dict[str, float]) -> bool:
    return (diff["pred_mismatch"] == 0 and diff["log_prob"] < 1e-3 and diff["prob"] < 1e-4
            and diff["alpha"] < 1e-5)


@pytest.fixture(scope="module", params=PAPER_MODELS)
def pair(request, tmp_path_factory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp(request.param)
    yield build_pair(request.param, folder)
    shutil.rmtree(folder, ignore_errors=True)  # full-size weights (up to 2.2 GB): free the disk per entry


# -- the registry entries -----------------------------------------------------------------------------
def test_entries_and_aliases_are_registered():
    assert set(PAPER_MODELS) <= set(list_models())
    for dataset, rb_id, name in [("cifar100", "Bai2023Improving_edm", "cifar100-adasmooth"),
                                 ("cifar10", "Bai2023Improving_edm", "cifar10-adasmooth"),
                                 ("cifar100", "Bai2023Improving_trades", "cifar100-adasmooth-trades"),
                                 ("imagenet", "Bai2024MixedNUTS", "imagenet-mixednuts")]:
        assert get_model_config(f"{dataset}/Linf/{rb_id}").name == name
        assert get_model_config(f"{dataset}/{rb_id}").name == name


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_entries_carry_their_constants_and_provenance_as_data(name):
    config = get_model_config(name)
    assert ModelConfig.from_dict(config.to_dict()) == config  # survives JSON
    assert config.reported is not None and config.reported.source and config.citation and config.paper
    assert config.standard.license and config.robust.license and config.license
    assert (config.policy is None) == (config.nuts is not None)
    parts = [config.standard.weights, config.robust.weights] + ([config.weights] if config.policy else [])
    assert {w.robustbench for w in parts} == {config.robust.weights.robustbench}
    assert config.robust.weights.robustbench.endswith(("Bai2023Improving_edm", "Bai2023Improving_trades",
                                                       "Bai2024MixedNUTS"))
    assert [w.index for w in parts] == list(range(len(parts))) and all(w.format for w in parts)


def test_released_constants():
    c100 = get_model_config("cifar100-adasmooth")
    assert (c100.policy.gamma_scale, c100.policy.gamma_bias, c100.policy.alpha_range) == (2.0, 1.3, (0.84, 0.99))
    assert (c100.std_scale, c100.rob_scale) == (2.0, 1.0)
    assert (c100.reported.clean_acc, c100.reported.autoattack_acc) == (85.21, 38.72)
    c10 = get_model_config("cifar10-adasmooth")
    assert (c10.policy.gamma_bias, c10.policy.alpha_range, c10.std_scale, c10.rob_scale) == (1.05, (0.96, 1.0), 1.2, 0.3)
    nuts = get_model_config("imagenet-mixednuts")
    assert nuts.eps == pytest.approx(4 / 255) and nuts.reported.n_examples == 5000
    assert (round(nuts.nuts.scale, 5), round(nuts.nuts.power, 4), round(nuts.nuts.bias, 4),
            round(nuts.alpha, 5)) == (0.02354, 2.7143, -0.2857, 0.99713)


# -- parity with RobustBench ----------------------------------------------------------------------------
def test_matches_robustbench(pair: Pair):
    diff = compare(pair, pair.images)
    logging.getLogger(__name__).info("%s: %s", pair.name, diff)
    assert matches(diff), diff
    # the comparison is discriminative: far from uniform, input-dependent outputs ...
    assert diff["ref_confidence"] > 1.5 / pair.config.num_classes, diff
    assert diff["ref_distinct_preds"] >= 2, diff
    if pair.config.policy is not None:
        lo, hi = pair.config.policy.alpha_range
        assert diff["ref_alpha_spread"] > 0.01 * (hi - lo), diff
    # ... so that a 2 % change of the input scale is caught
    assert not matches(compare(pair, pair.images * 0.98))


def test_files_are_robustbench_format(tmp_path):
    """RobustBench's own loader reads the files we write and we read (reduced MixedNUTS CIFAR-10)."""
    from robustbench.utils import load_model as rb_load_model

    pair = build_pair("cifar10-mixednuts", tmp_path)
    with robustbench_on_cpu(reduced=True):
        reloaded = rb_load_model("Bai2024MixedNUTS", model_dir=str(tmp_path), dataset="cifar10",
                                 threat_model="Linf").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pair.images), pair.robustbench(pair.images))


def test_offline_missing_files_name_each_file_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    from robust_mix.weights import fetch_robustbench_files

    files = robustbench_files("cifar100", "Linf", "Bai2023Improving_edm", tmp_path)
    with pytest.raises(BackboneNotFoundError) as err:
        fetch_robustbench_files("robustbench/cifar100/Linf/Bai2023Improving_edm", files)
    for path, gid in files:
        assert str(path) in str(err.value) and gid in str(err.value)
    assert len(files) == 3 and files[2][0].name == "Bai2023Improving_edm.pt_m2.pt"


def test_offline_load_model_fails_fast_with_the_files_to_fetch(tmp_path, monkeypatch):
    """Before building a 567 M-parameter model, load_model says which files are missing."""
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    with pytest.raises(BackboneNotFoundError, match="Bai2023Improving_edm.pt_m2.pt"):
        load_model("cifar100-adasmooth", model_dir=tmp_path)


def test_a_file_from_the_wrong_model_is_rejected(tmp_path):
    """Swapping the robust file for the standard one names the file and the format."""
    build_pair("cifar10-mixednuts", tmp_path)
    m0, m1 = (p for p, _ in robustbench_files("cifar10", "Linf", "Bai2024MixedNUTS", tmp_path))
    m1.write_bytes(m0.read_bytes())
    with robustbench_on_cpu(reduced=True), pytest.raises(ValueError, match="robustbench"):
        load_model("cifar10-mixednuts", model_dir=tmp_path,
                   standard=dataclasses.replace(get_model_config("cifar10-mixednuts").standard,
                                                ref="timm/resnetv2_50x1_bit"))
