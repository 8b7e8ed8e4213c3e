"""The six published mixed models (PAPER.md section 6), as RobustBench serves them.

Standard bases are timm architectures, robust bases RobustBench's; the released checkpoint files
are RobustBench's own (``<model_dir>/<dataset>/Linf/<RobustBench id>.pt_m<i>.pt``), one per part,
each named by a :class:`~robust_mix.config.WeightsConfig` with the layout it is converted from
(:mod:`robust_mix.convert`). Every constant below is copied from the authors'
RobustBench code (``comp_model.py``, ``optimal_spca.yaml``) or the leaderboard, as data.

Names and aliases (the RobustBench ids repeat across data sets, so the aliases carry the data set
and threat model, the way RobustBench's ``model_dir`` does):

======================  =======================================================
name                    aliases
======================  =======================================================
cifar100-adasmooth      cifar100/Linf/Bai2023Improving_edm, cifar100/Bai2023Improving_edm
cifar100-adasmooth-     cifar100/Linf/Bai2023Improving_trades, cifar100/Bai2023Improving_trades
trades
cifar10-adasmooth       cifar10/Linf/Bai2023Improving_edm, cifar10/Bai2023Improving_edm
cifar10-mixednuts       cifar10/Linf/Bai2024MixedNUTS, cifar10/Bai2024MixedNUTS
cifar100-mixednuts      cifar100/Linf/Bai2024MixedNUTS, cifar100/Bai2024MixedNUTS
imagenet-mixednuts      imagenet/Linf/Bai2024MixedNUTS, imagenet/Bai2024MixedNUTS
======================  =======================================================
"""
from __future__ import annotations

from typing import Optional

from robust_mix.config import (BackboneConfig, InputConfig, ModelConfig, NutsConfig, PolicyConfig,
                               ReportedResult, WeightsConfig)
from robust_mix.registry import register_model

ADASMOOTH_PAPER = ("Bai, Anderson, Kim, Sojoudi: Improving the Accuracy-Robustness Trade-off of "
                   "Classifiers via Adaptive Smoothing. SIAM Journal on Mathematics of Data Science, "
                   "2024. https://arxiv.org/abs/2301.12554")
ADASMOOTH_CITATION = """@article{bai2024improving,
  title   = {Improving the Accuracy-Robustness Trade-off of Classifiers via Adaptive Smoothing},
  author  = {Bai, Yatong and Anderson, Brendon G. and Kim, Aerin and Sojoudi, Somayeh},
  journal = {SIAM Journal on Mathematics of Data Science},
  year    = {2024}
}"""
NUTS_PAPER = ("Bai, Zhou, Patel, Sojoudi: MixedNUTS: Training-Free Accuracy-Robustness Balance via "
              "Nonlinearly Mixed Classifiers. Transactions on Machine Learning Research, 2024. "
              "https://arxiv.org/abs/2402.02263")
NUTS_CITATION = """@article{bai2024mixednuts,
  title   = {MixedNUTS: Training-Free Accuracy-Robustness Balance via Nonlinearly Mixed Classifiers},
  author  = {Bai, Yatong and Zhou, Mo and Patel, Vishal M. and Sojoudi, Somayeh},
  journal = {Transactions on Machine Learning Research},
  year    = {2024}
}"""
#: Raw input contract (C, H, W) of each data set's models, as RobustBench feeds them.
INPUT_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet": (3, 224, 224)}
UNSTATED = "not stated by the authors or RobustBench; see the authors' release before reuse"

#: RobustBench's BiT composite resizes to 128x128 (bilinear, no antialiasing) and computes
#: (x - 0.5) / 0.5 inside the model; here both are the input adapter's job.
BIT_INPUT = InputConfig(input_size=(128, 128), interpolation="bilinear",
                        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), antialias=False)
#: RobustBench's ConvNeXt-V2 never applies its stored mean/std: the released weights take raw
#: [0, 1] pixels. The identity normalisation stops timm's ImageNet defaults from being filled in.
RAW_INPUT = InputConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _part(entry: str, index: int, fmt: str) -> WeightsConfig:
    """File ``index`` of RobustBench's multi-file checkpoint ``entry`` (``"<dataset>/Linf/<id>"``), in layout ``fmt``."""
    return WeightsConfig(robustbench=entry, index=index, format=fmt)


def _bit(num_classes: int, weights: WeightsConfig) -> BackboneConfig:
    return BackboneConfig(ref="timm/resnetv2_152x2_bit", kwargs={"num_classes": num_classes},
                          input=BIT_INPUT, weights=weights,
                          license="Apache-2.0 (BiT-M-R152x2 architecture and ImageNet-21k "
                                  f"pre-training, Google); fine-tuned weights: {UNSTATED}")


def _robustbench(dataset: str, name: str, weights: WeightsConfig) -> BackboneConfig:
    return BackboneConfig(ref=f"robustbench/{dataset}/Linf/{name}", weights=weights, license=UNSTATED)


def _result(clean: float, autoattack: float, dataset: str, eps: str, n: int) -> ReportedResult:
    # every paper entry's standard base was pre-trained on ImageNet-21k/22k: RobustBench lists additional data
    return ReportedResult(clean_acc=clean, autoattack_acc=autoattack, n_examples=n,
                          source=f"RobustBench leaderboard, {dataset}, Linf eps={eps}, standard "
                                 f"AutoAttack, first {n:,} test images", additional_data=True)


def _aliases(dataset: str, rb_id: str) -> list[str]:
    return [f"{dataset}/Linf/{rb_id}", f"{dataset}/{rb_id}"]


def _adasmooth(name: str, dataset: str, rb_id: str, robust: str, robust_numbers: str,
               num_classes: int, gamma_bias: float, alpha_range: tuple[float, float],
               std_scale: float, rob_scale: float, reported: ReportedResult) -> ModelConfig:
    entry = f"{dataset}/Linf/{rb_id}"
    return ModelConfig(
        name=name, dataset=dataset, threat_model="Linf", eps=8 / 255, num_classes=num_classes,
        input_shape=INPUT_SHAPES[dataset],
        standard=_bit(num_classes, _part(entry, 0, "bit_rn")),
        robust=_robustbench(dataset, robust, _part(entry, 1, "robustbench")),
        alpha=None,
        policy=PolicyConfig(standard_layers=["stages.0", "stages.1"], robust_layers=["layer.0", "layer.1"],
                            widths=[512, 768, 1024], blocks=2, input_shape=(3, 32, 32),
                            gamma_scale=2.0, gamma_bias=gamma_bias, alpha_range=alpha_range),
        mixing="prob", std_scale=std_scale, rob_scale=rob_scale,
        weights=_part(entry, 2, "mixing_net_v4"),
        reported=reported,
        description=(f"Adaptive smoothing ({rb_id} on RobustBench): BiT-M-R152x2 (standard, input "
                     f"resized to 128x128) mixed with {robust} (robust, {robust_numbers} clean / "
                     "AutoAttack) by a mixing network reading both models' first two stages; "
                     f"alpha(x) in {alpha_range}, logit temperatures {std_scale} / {rob_scale}. "
                     f"Takes {num_classes}-class 32x32 images in [0, 1]; two forward passes per prediction."),
        paper=ADASMOOTH_PAPER, citation=ADASMOOTH_CITATION, license=UNSTATED,
        aliases=_aliases(dataset, rb_id))


def _mixednuts(name: str, dataset: str, standard: BackboneConfig, robust: str,
               robust_numbers: Optional[str], num_classes: int, eps: float, nuts: NutsConfig,
               alpha: float, reported: ReportedResult, robust_format: str,
               data_note: str, license: str, preprocessing: Optional[str] = None) -> ModelConfig:
    about = f"{robust}" + (f" ({robust_numbers} clean / AutoAttack)" if robust_numbers else "")
    return ModelConfig(
        name=name, dataset=dataset, threat_model="Linf", eps=eps, num_classes=num_classes,
        input_shape=INPUT_SHAPES[dataset], preprocessing=preprocessing,
        standard=standard,
        robust=_robustbench(dataset, robust, _part(nuts_entry(dataset), 1, robust_format)),
        alpha=alpha, nuts=nuts, mixing="prob",
        reported=reported,
        description=(f"MixedNUTS (Bai2024MixedNUTS on RobustBench, {dataset}): the standard model's "
                     f"one-hot prediction mixed with the robust model {about} after the nonlinear "
                     f"logit map s={nuts.scale:.4g}, p={nuts.power:.4g}, c={nuts.bias:.4g}; "
                     f"fixed alpha={alpha:.5f}. {data_note} Two forward passes per prediction."),
        paper=NUTS_PAPER, citation=NUTS_CITATION, license=license,
        aliases=_aliases(dataset, "Bai2024MixedNUTS"))


def nuts_entry(dataset: str) -> str:
    """RobustBench's MixedNUTS checkpoint of a data set (file 0: the standard base, file 1: the robust one)."""
    return f"{dataset}/Linf/Bai2024MixedNUTS"


register_model(_adasmooth(
    "cifar100-adasmooth", "cifar100", "Bai2023Improving_edm", "Wang2023Better_WRN-70-16", "75.22 / 42.67",
    num_classes=100, gamma_bias=1.3, alpha_range=(0.84, 0.99), std_scale=2.0, rob_scale=1.0,
    reported=_result(85.21, 38.72, "CIFAR-100", "8/255", 10_000)))

register_model(_adasmooth(
    "cifar100-adasmooth-trades", "cifar100", "Bai2023Improving_trades", "Gowal2020Uncovering_extra",
    "69.15 / 36.88",
    num_classes=100, gamma_bias=1.0, alpha_range=(0.815, 0.915), std_scale=2.0, rob_scale=1.0,
    reported=_result(80.18, 35.15, "CIFAR-100", "8/255", 10_000)))

register_model(_adasmooth(
    "cifar10-adasmooth", "cifar10", "Bai2023Improving_edm", "Wang2023Better_WRN-70-16", "93.25 / 70.69",
    num_classes=10, gamma_bias=1.05, alpha_range=(0.96, 1.0), std_scale=1.2, rob_scale=0.3,
    reported=_result(95.23, 68.06, "CIFAR-10", "8/255", 10_000)))

_CIFAR_NOTE = ("Takes 32x32 images in [0, 1]; the BiT base resizes them to 128x128 itself. "
               "Standard base alone: {} clean / 0 AutoAttack.")

register_model(_mixednuts(
    "cifar10-mixednuts", "cifar10", _bit(10, _part(nuts_entry("cifar10"), 0, "bit_rn")), "Peng2023Robust", "93.27 / 71.07", 10, 8 / 255,
    NutsConfig(scale=5.0, power=4.0, bias=-1.1, ln_k=250), alpha=0.9987500602493457,
    reported=_result(95.19, 70.08, "CIFAR-10", "8/255", 10_000),
    robust_format="robustbench", data_note=_CIFAR_NOTE.format("98.50"), license=UNSTATED))

register_model(_mixednuts(
    "cifar100-mixednuts", "cifar100", _bit(100, _part(nuts_entry("cifar100"), 0, "bit_rn")), "Wang2023Better_WRN-70-16", None, 100, 8 / 255,
    NutsConfig(scale=0.6115753843212784, power=3.571428571428571, bias=-2.142857142857143, ln_k=250),
    alpha=0.9860300534207915,
    reported=_result(83.08, 41.91, "CIFAR-100", "8/255", 10_000),
    robust_format="robustbench", data_note=_CIFAR_NOTE.format("91.38"), license=UNSTATED))

register_model(_mixednuts(
    "imagenet-mixednuts", "imagenet",
    BackboneConfig(ref="timm/convnextv2_large", kwargs={"num_classes": 1000}, input=RAW_INPUT,
                   weights=_part(nuts_entry("imagenet"), 0, "convnext_v2"),
                   license="CC-BY-NC-4.0 (ConvNeXt-V2 pre-trained weights, Meta); fine-tuned "
                           f"weights: {UNSTATED}"),
    "Liu2023Comprehensive_Swin-L", "78.92 / 59.56", 1000, 4 / 255,
    NutsConfig(scale=0.023535468936502525, power=2.7142857142857144, bias=-0.2857142857142858, ln_k=250),
    alpha=0.9971266414518896,
    reported=_result(81.48, 58.62, "ImageNet", "4/255", 5_000),
    robust_format="robustbench_swin", preprocessing="BicubicRes256Crop224",  # RobustBench's zoo entry's
    data_note=("Takes 224x224 images in [0, 1] prepared as RobustBench's 'BicubicRes256Crop224' "
               "(bicubic resize to 256, centre crop 224); the ConvNeXt-V2-L base (86.18 clean / 0 "
               "AutoAttack) takes raw pixels, the Swin-L base normalises itself."),
    license="CC-BY-NC-4.0 at most (inherited from the ConvNeXt-V2 pre-training); see base models"))
