"""Evaluation and training data, local-first.

Fashion-MNIST is read from the original ``*-ubyte.gz`` files: ``$ROBUST_MIX_DATA``, Debian's
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), ``<data_dir>``, or a torchvision
root (``<data_dir>/FashionMNIST/raw``); torchvision downloads it when online. CIFAR-10/100 come
from torchvision (an existing ``data_dir`` offline). ImageNet is RobustBench's fixed list of 5,000
validation images, read from a local ``<data_dir>/val/<wnid>/<file>`` folder.

Splits: ``"test"`` is the official test set, used only for final numbers. ``"train"`` and
``"val"`` partition the official training set with a fixed permutation (seed 0): the last
:data:`VAL_SIZE` images of ``torch.randperm(N, generator=manual_seed(0))`` are the validation
split, used for model selection and calibration.
"""
from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from robust_mix.validate import optional_positive_int

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
VAL_SIZE = 5000
SPLIT_SEED = 0

FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                        "Sneaker", "Bag", "Ankle boot"]
_FMNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


class DatasetNotFoundError(FileNotFoundError):
    """The data set is not on disk and could not be downloaded; the message says where to put it."""


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist_dirs(data_dir: Optional[PathLike]) -> list[Path]:
    dirs = [Path(os.environ["ROBUST_MIX_DATA"])] if os.environ.get("ROBUST_MIX_DATA") else []
    dirs.append(DEBIAN_FASHION_MNIST)
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / "FashionMNIST" / "raw"]
    return dirs


def _fashion_mnist_official(part: str, data_dir: Optional[PathLike]) -> tuple[torch.Tensor, torch.Tensor]:
    images_name, labels_name = _FMNIST_FILES[part]
    searched = _fashion_mnist_dirs(data_dir)
    for folder in searched:
        if (folder / images_name).is_file() and (folder / labels_name).is_file():
            images, labels = _read_idx(folder / images_name), _read_idx(folder / labels_name)
            return (torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255),
                    torch.from_numpy(labels.astype(np.int64)))
    if data_dir is not None:
        try:
            import torchvision

            torchvision.datasets.FashionMNIST(str(data_dir), train=part == "train", download=True)
            return _fashion_mnist_official(part, data_dir)
        except Exception as err:  # offline: fall through to the clear error below
            logger.debug("torchvision download of Fashion-MNIST failed: %s", err)
    raise DatasetNotFoundError(
        f"Fashion-MNIST ({images_name}) not found in {[str(d) for d in searched]}. Install it with "
        "'apt-get install dataset-fashion-mnist', or set ROBUST_MIX_DATA to a folder holding the four "
        "original *-ubyte.gz files.")


def split_indices(n: int, val_size: int = VAL_SIZE, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed (train, val) partition of ``range(n)``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n - val_size].sort().values, perm[n - val_size:].sort().values


def load_fashion_mnist(split: str = "test", data_dir: Optional[PathLike] = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST as tensors: images ``(N, 1, 28, 28)`` float in ``[0, 1]``, labels ``(N,)`` int64."""
    if split == "test":
        return _fashion_mnist_official("test", data_dir)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    images, labels = _fashion_mnist_official("train", data_dir)
    train_idx, val_idx = split_indices(len(labels))
    idx = train_idx if split == "train" else val_idx
    return images[idx], labels[idx]


def _load_cifar(cls_name: str) -> Callable[[str, Optional[PathLike]], tuple[torch.Tensor, torch.Tensor]]:
    def load(split: str, data_dir: Optional[PathLike]) -> tuple[torch.Tensor, torch.Tensor]:
        import torchvision

        root = Path(data_dir or "./data")
        if split not in ("train", "test"):
            raise ValueError(f"{cls_name} splits are 'train' and 'test', got {split!r}")
        try:
            ds = getattr(torchvision.datasets, cls_name)(str(root), train=split == "train", download=True)
        except Exception as err:
            raise DatasetNotFoundError(
                f"{cls_name} not found under {root} and could not be downloaded ({err}); place the "
                f"torchvision archive folder there (e.g. {root}/cifar-10-batches-py)") from err
        images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).float().div_(255)
        return images, torch.tensor(ds.targets, dtype=torch.int64)
    return load


# RobustBench's ImageNet preprocessings as data: (resize, center crop, interpolation); None = keep.
IMAGENET_PREPROCESSINGS: dict[str, tuple[Optional[Union[int, tuple[int, int]]], Optional[int], str]] = {
    "Res256Crop224": (256, 224, "bilinear"),
    "BicubicRes256Crop224": (256, 224, "bicubic"),
    "Res224": ((224, 224), None, "bilinear"),
    "Crop288": (None, 288, "bilinear"),
}
IMAGENET_DEFAULT_PREPROCESSING = "Res256Crop224"
IMAGENET_TEST_SIZE = 5000


def _robustbench_helper_file(name: str) -> Path:
    """A file of RobustBench's ``helper_files`` folder, found without importing robustbench."""
    import importlib.util

    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(f"RobustBench's {name} is needed for ImageNet; pip install robustbench")
    return Path(list(spec.submodule_search_locations)[0]) / "helper_files" / name


def imagenet_test_ids() -> list[str]:
    """RobustBench's 5,000 ImageNet validation images (``"<wnid>/<file>.JPEG"``), in leaderboard order."""
    return [line.strip() for line in _robustbench_helper_file("imagenet_test_image_ids.txt").read_text().splitlines()
            if line.strip()]


def load_imagenet(split: str = "test", data_dir: Optional[PathLike] = None, n_examples: Optional[int] = None,
                  preprocessing: str = IMAGENET_DEFAULT_PREPROCESSING) -> tuple[torch.Tensor, torch.Tensor]:
    """RobustBench's ImageNet test images ``(N, 3, H, W)`` in ``[0, 1]`` and labels ``(N,)``.

    Images are read from ``<data_dir>/val/<wnid>/<file>`` (or ``<data_dir>/<wnid>/<file>``) and
    preprocessed as RobustBench does (``preprocessing``, see :data:`IMAGENET_PREPROCESSINGS`).
    """
    import json

    from PIL import Image
    from torchvision import transforms

    if split != "test":
        raise ValueError(f"ImageNet has only the leaderboard's 'test' split here, got {split!r}")
    if preprocessing not in IMAGENET_PREPROCESSINGS:
        raise ValueError(f"unknown ImageNet preprocessing {preprocessing!r}; known: {list(IMAGENET_PREPROCESSINGS)}")
    ids = imagenet_test_ids()[:optional_positive_int("n_examples", n_examples)]
    class_index = json.loads(_robustbench_helper_file("imagenet_class_to_id_map.json").read_text())
    root = Path(data_dir or "./data")
    root = root / "val" if (root / "val").is_dir() else root
    missing = [i for i in ids if not (root / i).is_file()]
    if missing:
        raise DatasetNotFoundError(f"{len(missing)} of RobustBench's ImageNet test images are missing under "
                                   f"{root} (first: {missing[0]}); point data_dir at the ImageNet validation "
                                   "set arranged as val/<wnid>/<file>.JPEG")
    resize, crop, interpolation = IMAGENET_PREPROCESSINGS[preprocessing]
    steps = [] if resize is None else [transforms.Resize(resize, interpolation=transforms.InterpolationMode(interpolation))]
    steps += [] if crop is None else [transforms.CenterCrop(crop)]
    transform = transforms.Compose(steps + [transforms.ToTensor()])
    images = torch.stack([transform(Image.open(root / i).convert("RGB")) for i in ids])
    labels = torch.tensor([class_index[i.split("/")[0]] for i in ids], dtype=torch.int64)
    return images, labels


_LOADERS: dict[str, Callable[[str, Optional[PathLike]], tuple[torch.Tensor, torch.Tensor]]] = {
    "fashion-mnist": lambda split, data_dir: load_fashion_mnist(split, data_dir),
    "cifar10": _load_cifar("CIFAR10"),
    "cifar100": _load_cifar("CIFAR100"),
    "imagenet": lambda split, data_dir: load_imagenet(split, data_dir),
}


def available_datasets() -> list[str]:
    """Names :func:`load_dataset` knows."""
    return sorted(_LOADERS)


def canonical_dataset(name: str) -> str:
    """The one spelling of a data set name: lower case, ``-`` for ``_``, ``fmnist`` -> ``fashion-mnist``."""
    key = name.lower().replace("_", "-")
    return {"fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}.get(key, key)


def load_dataset(name: str, split: str = "test", n_examples: Optional[int] = None,
                 data_dir: Optional[PathLike] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_examples`` images and labels of a split (all when ``None``), images in ``[0, 1]``."""
    key = canonical_dataset(name)
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {available_datasets()}")
    n_examples = optional_positive_int("n_examples", n_examples)
    images, labels = _LOADERS[key](split, data_dir)
    if n_examples is not None:
        if n_examples > len(labels):
            raise ValueError(f"asked for {n_examples} examples but {name} {split} has {len(labels)}")
        images, labels = images[:n_examples], labels[:n_examples]
    return images, labels
