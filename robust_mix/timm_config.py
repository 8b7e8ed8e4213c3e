"""How a model looks to timm and RobustBench: its names and its timm ``pretrained_cfg``, derived from its config.

RobustBench's only hook for outside models is timm's registry:
``robustbench.utils.load_model(name, dataset=D, threat_model=T)`` first asks timm for
``f"{name.lower().replace('-', '_')}_{D}_{T.lower()}"`` (:func:`robustbench_timm_name`). An entry
``<dataset>-<method>`` is therefore the timm model ``robustmix_<method>_<dataset>_<threat>`` and
answers to the RobustBench name ``RobustMix-<method>`` (any case):

======================================  ===============================  ========================================
entry                                   RobustBench name                 timm model
======================================  ===============================  ========================================
``cifar100-adasmooth``                  ``RobustMix-adasmooth``          ``robustmix_adasmooth_cifar100_linf``
``cifar100-adasmooth-trades``           ``RobustMix-adasmooth-trades``   ``robustmix_adasmooth_trades_cifar100_linf``
``imagenet-mixednuts``                  ``RobustMix-mixednuts``          ``robustmix_mixednuts_imagenet_linf``
======================================  ===============================  ========================================

A folder written by ``save_pretrained`` names the architecture :data:`SAVED_ARCHITECTURE`, whose
factory reads the folder's own ``config.json``.

The ``pretrained_cfg`` states the input contract as timm states it: raw ``[0, 1]`` images
(``mean`` 0, ``std`` 1: the model normalises inside), ``input_size`` from ``ModelConfig.input_shape`` (else the
data set's images, :data:`DATASET_IMAGES`),
and the ``interpolation`` / ``crop_pct`` of the RobustBench preprocessing robust_mix evaluates the entry's images
with (:func:`images_preprocessing`: an ImageNet entry that states none gets RobustBench's default), which is what
``robustbench.data.get_preprocessing`` turns back into a transform for timm models.
Nothing here imports a third-party library when imported.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from robust_mix.config import ModelConfig

PREFIX = "robustmix"
ROBUSTBENCH_PREFIX = "RobustMix"
#: The timm architecture of models saved with ``save_pretrained`` (``config.json``'s ``architecture``).
SAVED_ARCHITECTURE = f"{PREFIX}_saved"
#: timm's ``(interpolation, crop_pct)`` for RobustBench's preprocessings that are
#: ``Resize(224 / crop_pct) + CenterCrop(224)`` (``robustbench.data.get_timm_model_preprocessing``'s
#: form); ``None``: images used as they are (CIFAR: a full-size "crop").
TIMM_CROPS: dict[Optional[str], tuple[str, float]] = {
    None: ("bilinear", 1.0),
    "Res256Crop224": ("bilinear", 224 / 256),
    "BicubicRes256Crop224": ("bicubic", 224 / 256),
}
_NAME = re.compile(r"[a-z0-9_]+")
#: The ``(C, H, W)`` of a data set's test images, for entries that declare no ``input_shape`` (timm's transforms
#: would otherwise resize them to its default, 224 x 224).
DATASET_IMAGES: dict[str, tuple[int, int, int]] = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
                                                   "fashion-mnist": (1, 28, 28)}


def robustbench_timm_name(model_name: str, dataset: str, threat_model: str) -> str:
    """The timm model RobustBench's ``load_model(model_name, dataset, threat_model)`` asks for (its own rule)."""
    return f"{model_name.lower().replace('-', '_')}_{dataset.lower()}_{threat_model.lower()}"


def method_name(config: ModelConfig) -> str:
    """The entry's name without its leading ``<dataset>-`` (``cifar100-adasmooth-trades`` -> ``adasmooth-trades``)."""
    prefix = f"{config.dataset}-"
    return config.name[len(prefix):] if config.name.startswith(prefix) else config.name


def robustbench_name(config: ModelConfig) -> str:
    """The name RobustBench's ``load_model`` reaches the entry by (``RobustMix-adasmooth``)."""
    return f"{ROBUSTBENCH_PREFIX}-{method_name(config)}"


def timm_name(config: ModelConfig) -> str:
    """The entry's timm model name, ``robustmix_<method>_<dataset>_<threat>``.

    Raises:
        ValueError: the name would not be a plain timm name (letters, digits, ``_``; a ``.`` would be
            read as a pretrained tag), so neither timm nor RobustBench could reach it.
    """
    name = robustbench_timm_name(robustbench_name(config), config.dataset, config.threat_model)
    if not _NAME.fullmatch(name):
        raise ValueError(f"entry {config.name!r} ({config.dataset}, {config.threat_model}) would be the timm model "
                         f"{name!r}, which timm cannot look up (a '.' starts a pretrained tag); name entries with "
                         "letters, digits and '-' only")
    return name


def has_pretrained_weights(config: ModelConfig) -> bool:
    """Whether building ``config`` with ``pretrained=True`` loads trained tensors for every part: both base models
    (their own weights, RobustBench's or timm's) and, for an adaptive entry, its policy's weights (without them the
    policy would be an untrained network). Such an entry is listed by ``timm.list_pretrained``."""
    bases = config.standard is not None and config.robust is not None
    return bases and (config.policy is None or config.weights is not None)


def images_preprocessing(config: ModelConfig) -> Optional[str]:
    """The RobustBench preprocessing of the test images robust_mix evaluates the model on
    (:func:`robust_mix.data.preprocessing_for`: the config's own, else its data set's default, ``Res256Crop224`` for
    an ImageNet entry that states none; ``None`` for images used as they are); the config's own on data sets
    robust_mix cannot open."""
    from robust_mix.data import available_datasets, preprocessing_for  # torch's: imported when first asked
    from robust_mix.protocol import canonical_dataset

    if canonical_dataset(config.dataset) not in available_datasets():
        return config.preprocessing
    return preprocessing_for(config.dataset, config=config)


def has_timm_form(config: ModelConfig) -> bool:
    """Whether timm's ``pretrained_cfg`` can state the entry's preprocessing (see :data:`TIMM_CROPS`)."""
    return images_preprocessing(config) in TIMM_CROPS


def raw_images_cfg(channels: int = 3) -> dict[str, tuple[float, ...]]:
    """timm's ``mean`` and ``std`` of a mix, whatever its bases: raw ``[0, 1]`` images go in (each base normalises
    them itself, inside the model), so timm's ``Normalize`` must leave them as they are."""
    return {"mean": (0.0,) * channels, "std": (1.0,) * channels}


def pretrained_cfg(config: ModelConfig, architecture: str, hf_hub_id: Optional[str] = None) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of a model built from ``config`` (a plain dict, as timm keeps it).

    Raises:
        ValueError: the entry's RobustBench preprocessing has no timm form (see :data:`TIMM_CROPS`).
    """
    preprocessing = images_preprocessing(config)
    if preprocessing not in TIMM_CROPS:
        raise ValueError(f"{config.name!r}: RobustBench's preprocessing {preprocessing!r} is not a resize "
                         f"and centre crop, so timm's pretrained_cfg cannot state it; timm forms exist for "
                         f"{[p for p in TIMM_CROPS if p]} and None (images as they are)")
    interpolation, crop_pct = TIMM_CROPS[preprocessing]
    shape = config.input_shape if config.input_shape is not None else DATASET_IMAGES.get(config.dataset)
    cfg: dict[str, Any] = {
        "architecture": architecture, "tag": None, "source": "hf-hub" if hf_hub_id else "robust_mix",
        "hf_hub_id": hf_hub_id, "interpolation": interpolation, "crop_pct": crop_pct, "crop_mode": "center",
        **raw_images_cfg(shape[0] if shape is not None else 3), "num_classes": config.num_classes,
        "label_names": tuple(config.labels) if config.labels else None, "license": config.license or None,
        "paper_name": config.paper or None, "description": config.description or None,
        "notes": tuple(config.weight_locations()) or None,
    }
    if config.input_shape is not None:
        cfg["input_size"] = tuple(config.input_shape)
        cfg["fixed_input_size"] = True
    elif config.dataset in DATASET_IMAGES:  # no contract stated: the data set's images, as they are
        cfg["input_size"] = DATASET_IMAGES[config.dataset]
    return cfg  # compositions on no known data set declare none; timm's default then applies
