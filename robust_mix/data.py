"""Evaluation and training data, local-first, as tensors or as streamed data sets.

Fashion-MNIST is read from the original ``*-ubyte.gz`` files: ``$ROBUST_MIX_DATA``, Debian's
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), ``<data_dir>``, or a torchvision
root (``<data_dir>/FashionMNIST/raw``); torchvision downloads it when online. CIFAR-10/100 come
from torchvision (an existing ``data_dir`` offline). ImageNet's test split is RobustBench's fixed
list of 5,000 validation images, read from a local ``<data_dir>/val/<wnid>/<file>`` folder; its
training split is ``<data_dir>/train/<wnid>/<file>``, both prepared as RobustBench does.

Splits: ``"test"`` is the official test set, used only for final numbers. ``"train"`` and
``"val"`` partition the official training set with a fixed permutation (seed 0): the last
``VAL_SIZES[name]`` images of ``torch.randperm(N, generator=manual_seed(0))`` are the validation
split, used for model selection and calibration. :func:`split_indices` is the one rule.

Two views of the same splits: :func:`load_dataset` returns ``(images, labels)`` tensors (evaluation
on a few thousand images); :func:`open_dataset` returns a map-style ``torch.utils.data.Dataset``
that converts one image at a time (training through a ``DataLoader`` with workers), so memory does
not grow with the number of images used. Both give identical images.
"""
from __future__ import annotations

import functools
import gzip
import logging
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from robust_mix.protocol import canonical_dataset
from robust_mix.validate import InvalidInputError, check_choice, check_path, optional_positive_int

if TYPE_CHECKING:
    from robust_mix.config import ModelConfig

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
VAL_SIZE = 5000
SPLIT_SEED = 0
#: Validation images held out of each data set's official training set.
VAL_SIZES = {"fashion-mnist": VAL_SIZE, "cifar10": VAL_SIZE, "cifar100": VAL_SIZE, "imagenet": 10_000}
SPLITS = ("train", "val", "test")

FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                        "Sneaker", "Bag", "Ankle boot"]
_FMNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


class DatasetNotFoundError(FileNotFoundError):
    """The data set is not on disk and could not be downloaded; the message says where to put it."""


class DatasetCorruptError(InvalidInputError):
    """A data file is damaged, truncated or not what its name says; the message names it and what to do."""


class NotEnoughExamplesError(InvalidInputError):
    """More examples were asked for than the split holds (a ``ValueError``); the message gives both counts, which
    are also ``asked`` and ``available``."""

    def __init__(self, asked: int, name: str, split: str, available: int) -> None:
        super().__init__(f"asked for {asked} examples but {name} {split} has {available}; pass n_examples <= "
                         f"{available} (or none: all of them)")
        self.asked, self.available = asked, available


_IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one Fashion-MNIST uses
_FMNIST_OFFICIAL_COUNTS = {"train": 60_000, "test": 10_000}


def _corrupt(path: Path, why: str) -> DatasetCorruptError:
    return DatasetCorruptError(f"{path} {why}; delete it and download the original Fashion-MNIST file again (or "
                               "reinstall dataset-fashion-mnist), or point data_dir / ROBUST_MIX_DATA elsewhere")


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed, unsigned bytes) as an array of the shape its header gives.

    Raises:
        DatasetCorruptError: not gzip, truncated, a wrong magic number or type, or a payload of
            another size than the header promises.
    """
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except gzip.BadGzipFile:
        raise _corrupt(path, "is not a gzip file") from None
    except (EOFError, zlib.error, OSError) as err:
        raise _corrupt(path, f"is truncated or corrupt ({err or type(err).__name__})") from None
    if len(data) < 4:
        raise _corrupt(path, f"holds no IDX header ({len(data)} bytes after decompression)")
    if data[0] != 0 or data[1] != 0:
        raise _corrupt(path, f"has the magic number {data[:4].hex()}, not an IDX file's (0000 08 0n)")
    if data[2] != _IDX_UBYTE:
        raise _corrupt(path, f"holds IDX type 0x{data[2]:02x}, not unsigned bytes (0x08)")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise _corrupt(path, f"is truncated inside its header ({len(data)} of {offset} bytes)")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - offset != expected:
        raise _corrupt(path, f"does not match its header: the header promises {expected} bytes of data, the file "
                             f"holds {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def split_indices(n: int, val_size: int = VAL_SIZE, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed (train, val) partition of ``range(n)``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n - val_size].sort().values, perm[n - val_size:].sort().values


def _split_positions(name: str, split: str, n: int) -> Optional[np.ndarray]:
    """Positions of ``split`` in the official training set of ``n`` images (``None`` for ``"test"``)."""
    _check_split(split)
    if split == "test":
        return None
    train_idx, val_idx = split_indices(n, VAL_SIZES[name])
    return (train_idx if split == "train" else val_idx).numpy()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")


# -- streamed data sets ------------------------------------------------------------------------
class ImageArrayDataset(Dataset):
    """Images kept in their source's ``uint8`` array, converted one at a time.

    Items are ``(image, label, position)``: ``(C, H, W)`` float32 in ``[0, 1]``, the class, and the
    item's position in this data set (stable, so per-image data such as adversarial buffers can be
    looked up by it).

    Args:
        images: ``(N, H, W)`` or ``(N, H, W, C)`` uint8 array.
        labels: ``(N,)`` classes.
        indices: the rows of ``images`` that make up this data set (default: all), no copy made.
        num_classes: size of the label set.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: Optional[np.ndarray] = None,
                 num_classes: Optional[int] = None) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"expected a (N, H, W[, C]) uint8 image array, got {images.dtype} {images.shape}")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.num_classes = int(num_classes if num_classes is not None else self.labels.max() + 1)

    def __len__(self) -> int:
        return len(self.indices)

    def _to_float(self, rows: np.ndarray) -> torch.Tensor:
        rows = np.ascontiguousarray(rows)
        array = torch.from_numpy(rows if rows.flags.writeable else rows.copy())
        array = array.unsqueeze(-3) if self.images.ndim == 3 else array.movedim(-1, -3)
        return array.float().div_(255)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        row = int(self.indices[position])
        return self._to_float(self.images[row]), int(self.labels[row]), int(position)

    def tensors(self, n: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` items (all when ``None``) as ``(N, C, H, W)`` images and ``(N,)`` labels."""
        rows = self.indices[:n]
        return self._to_float(self.images[rows]), torch.from_numpy(self.labels[rows].copy())


class ImageFileDataset(Dataset):
    """Image files read and prepared one at a time (ImageNet folders); items as :class:`ImageArrayDataset`'s.

    Args:
        files: image paths.
        labels: their classes.
        transform: PIL image -> ``(C, H, W)`` float tensor in ``[0, 1]``.
        num_classes: size of the label set.
    """

    def __init__(self, files: Sequence[Path], labels: Sequence[int], transform: Callable, num_classes: int) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.files, self.labels = list(files), list(labels)
        self.transform, self.num_classes = transform, num_classes

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        from PIL import Image

        from PIL import UnidentifiedImageError

        path = self.files[position]
        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB")), int(self.labels[position]), int(position)
        except (UnidentifiedImageError, OSError, SyntaxError) as err:  # PIL: not an image, truncated, bad header
            if isinstance(err, FileNotFoundError):
                raise DatasetNotFoundError(f"image file {path} has gone since the data set was listed") from err
            raise DatasetCorruptError(f"{path} is not a readable image ({type(err).__name__}: {err}); replace it "
                                      "with the original file of the data set") from err


def dataset_tensors(dataset: Dataset, n: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` items of a data set (all when ``None``) as ``(images, labels)`` tensors."""
    if isinstance(dataset, ImageArrayDataset):
        return dataset.tensors(n)
    count = len(dataset) if n is None else min(n, len(dataset))
    items = [dataset[i] for i in range(count)]
    if not items:
        raise ValueError("the data set is empty")
    return torch.stack([item[0] for item in items]), torch.tensor([item[1] for item in items], dtype=torch.int64)


def num_classes(dataset: Dataset) -> int:
    """The size of a data set's label set (``Subset`` wrappers looked through)."""
    inner = dataset
    while isinstance(inner, torch.utils.data.Subset):
        inner = inner.dataset
    count = getattr(inner, "num_classes", None)
    if count is None:
        raise ValueError(f"{type(inner).__name__} does not say how many classes it has (no num_classes)")
    return int(count)


# -- Fashion-MNIST -----------------------------------------------------------------------------
def _fashion_mnist_dirs(data_dir: Optional[PathLike]) -> list[Path]:
    """Where the files are looked for, first match wins: an explicit ``data_dir`` (also as a torchvision
    root), then ``$ROBUST_MIX_DATA``, then Debian's package folder."""
    dirs = [Path(data_dir), Path(data_dir) / "FashionMNIST" / "raw"] if data_dir is not None else []
    if os.environ.get("ROBUST_MIX_DATA"):
        dirs.append(Path(os.environ["ROBUST_MIX_DATA"]))
    dirs.append(DEBIAN_FASHION_MNIST)
    return dirs


@functools.lru_cache(maxsize=4)
def _read_idx_pair(images: Path, labels: Path, stamp: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Decoded once per process (the splits of one file share it); ``stamp`` (mtimes) keys a changed file anew.

    Raises:
        DatasetCorruptError: a damaged file, images that are not ``(N, 28, 28)``, labels that are not
            ``(N,)`` classes in ``[0, 10)``, or images and labels of different counts.
    """
    pixels, classes = _read_idx(images), _read_idx(labels)
    if pixels.ndim != 3 or pixels.shape[1:] != (28, 28):
        raise _corrupt(images, f"holds an array of shape {pixels.shape}, not (N, 28, 28) images (a labels file, or "
                               "another data set, under an images name?)")
    if classes.ndim != 1:
        raise _corrupt(labels, f"holds an array of shape {classes.shape}, not (N,) labels (an images file under a "
                               "labels name?)")
    if len(pixels) != len(classes):
        raise DatasetCorruptError(
            f"{images} holds {len(pixels)} images but {labels} holds {len(classes)} labels: the two files are not "
            "from the same download (train and test files mixed?); use the images and labels files from the same "
            "download")
    if len(classes) and int(classes.max()) >= len(FASHION_MNIST_LABELS):
        bad = np.flatnonzero(classes >= len(FASHION_MNIST_LABELS))
        raise _corrupt(labels, f"is not Fashion-MNIST's: labels must lie in [0, {len(FASHION_MNIST_LABELS)}), got "
                               f"{classes[bad[:8]].tolist()} at indices {bad[:8].tolist()} ({len(bad)} of {len(classes)})")
    return pixels, classes.astype(np.int64)


def _fashion_mnist_arrays(part: str, data_dir: Optional[PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """The official ``part`` (``"train"`` or ``"test"``): ``(N, 28, 28)`` uint8 images, ``(N,)`` labels."""
    images_name, labels_name = _FMNIST_FILES[part]
    searched = _fashion_mnist_dirs(data_dir)
    # the place the caller named (data_dir, also as a torchvision root, else $ROBUST_MIX_DATA): a copy read from
    # elsewhere is said, never silent (a mistyped $ROBUST_MIX_DATA read the system copy without a word)
    env = os.environ.get("ROBUST_MIX_DATA")
    named = (("data_dir", data_dir, searched[:2]) if data_dir is not None else
             ("ROBUST_MIX_DATA", env, searched[:1]) if env else None)
    for folder in searched:
        images, labels = folder / images_name, folder / labels_name
        if images.is_file() and labels.is_file():
            if named is not None and folder not in named[2]:
                logger.warning("Fashion-MNIST is not in %s %s; read the copy in %s instead", named[0], named[1],
                               folder)
            arrays = _read_idx_pair(images, labels, (images.stat().st_mtime, labels.stat().st_mtime))
            if len(arrays[1]) != _FMNIST_OFFICIAL_COUNTS[part]:
                logger.warning("%s holds %d images, not the official %d of Fashion-MNIST's %s set (a subset, or "
                               "the files of the other set?); splits and accuracies are of these images",
                               images, len(arrays[1]), _FMNIST_OFFICIAL_COUNTS[part], part)
            return arrays
    if data_dir is not None:
        try:
            import torchvision

            torchvision.datasets.FashionMNIST(str(data_dir), train=part == "train", download=True)
            return _fashion_mnist_arrays(part, data_dir)
        except Exception as err:  # offline: fall through to the clear error below
            logger.debug("torchvision download of Fashion-MNIST failed: %s", err)
    raise DatasetNotFoundError(
        f"Fashion-MNIST ({images_name}) not found in {[str(d) for d in searched]}. Install it with "
        "'apt-get install dataset-fashion-mnist', or set ROBUST_MIX_DATA to a folder holding the four "
        "original *-ubyte.gz files.")


def _open_fashion_mnist(split: str, data_dir: Optional[PathLike]) -> ImageArrayDataset:
    _check_split(split)
    images, labels = _fashion_mnist_arrays("test" if split == "test" else "train", data_dir)
    return ImageArrayDataset(images, labels, _split_positions("fashion-mnist", split, len(labels)), num_classes=10)


def load_fashion_mnist(split: str = "test", data_dir: Optional[PathLike] = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST as tensors: images ``(N, 1, 28, 28)`` float in ``[0, 1]``, labels ``(N,)`` int64."""
    return _open_fashion_mnist(split, data_dir).tensors()


# -- CIFAR -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _cifar_arrays(cls_name: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's ``(N, 32, 32, 3)`` uint8 images and labels, read once per process.

    Raises:
        DatasetNotFoundError: the archive folder is absent (and could not be downloaded) or lacks a file.
        DatasetCorruptError: a file of the folder does not have the checksum of the official release.
    """
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    folder = root / cls.base_folder
    if not folder.is_dir() and (root / cls.test_list[0][0]).is_file():  # the archive folder itself was given
        raise DatasetNotFoundError(f"{root} is the {cls_name} archive folder itself, not the folder holding it; pass "
                                   f"its parent {root.parent} as data_dir (--data-dir), which holds {cls.base_folder}/")
    if folder.is_dir():  # offline or not: check the files here, and name the one at fault
        _check_cifar_folder(cls_name, folder, [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])])
    try:
        ds = cls(str(root), train=train, download=not folder.is_dir())
    except Exception as err:
        raise DatasetNotFoundError(
            f"{cls_name} not found under {root} and could not be downloaded ({err}); place the "
            f"torchvision archive folder there ({folder}, from the extracted {cls.filename})") from err
    return np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64)


def _check_cifar_folder(cls_name: str, folder: Path, files: Sequence[tuple[str, str]]) -> None:
    """Every file of a torchvision CIFAR folder is present and has the official release's MD5.

    torchvision reads these files with ``pickle``; only the official files (checked here) are read.
    """
    import hashlib

    for name, md5 in files:
        path = folder / name
        if not path.is_file():
            raise DatasetNotFoundError(f"{path} is missing from the {cls_name} folder {folder}; extract the "
                                       "official archive there again (or delete the folder to download it)")
        digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        if digest != md5:
            raise DatasetCorruptError(f"{path} is not the official {cls_name} file (MD5 {digest}, expected {md5}): "
                                      "it is truncated or damaged. Delete the folder and download or extract the "
                                      "archive again")


def _open_cifar(name: str, cls_name: str, classes: int) -> Callable[[str, Optional[PathLike]], ImageArrayDataset]:
    def open_split(split: str, data_dir: Optional[PathLike]) -> ImageArrayDataset:
        _check_split(split)
        images, labels = _cifar_arrays(cls_name, Path(data_dir or "./data").resolve(), split != "test")
        return ImageArrayDataset(images, labels, _split_positions(name, split, len(labels)), num_classes=classes)
    return open_split


# -- ImageNet ----------------------------------------------------------------------------------
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


def imagenet_transform(preprocessing: str = IMAGENET_DEFAULT_PREPROCESSING) -> Callable:
    """RobustBench's preparation of one ImageNet image (PIL in, ``(3, H, W)`` in ``[0, 1]`` out)."""
    from torchvision import transforms

    if preprocessing not in IMAGENET_PREPROCESSINGS:
        raise ValueError(f"unknown ImageNet preprocessing {preprocessing!r}; known: {list(IMAGENET_PREPROCESSINGS)}")
    resize, crop, interpolation = IMAGENET_PREPROCESSINGS[preprocessing]
    steps = [] if resize is None else [transforms.Resize(resize, interpolation=transforms.InterpolationMode(interpolation))]
    steps += [] if crop is None else [transforms.CenterCrop(crop)]
    return transforms.Compose(steps + [transforms.ToTensor()])


def _imagenet_class_index() -> dict[str, int]:
    import json

    return json.loads(_robustbench_helper_file("imagenet_class_to_id_map.json").read_text())


def _imagenet_test_files(data_dir: Optional[PathLike], n_examples: Optional[int]) -> tuple[list[Path], list[int]]:
    ids = imagenet_test_ids()
    n_examples = optional_positive_int("n_examples", n_examples)
    if n_examples is not None and n_examples > len(ids):
        raise NotEnoughExamplesError(n_examples, "imagenet", "test (RobustBench's list)", len(ids))
    ids = ids[:n_examples]
    class_index = _imagenet_class_index()
    root = Path(data_dir or "./data")
    root = root / "val" if (root / "val").is_dir() else root
    missing = [i for i in ids if not (root / i).is_file()]
    if missing:
        raise DatasetNotFoundError(f"{len(missing)} of RobustBench's ImageNet test images are missing under "
                                   f"{root} (first: {missing[0]}); point data_dir at the ImageNet validation "
                                   "set arranged as val/<wnid>/<file>.JPEG")
    return [root / i for i in ids], [class_index[i.split("/")[0]] for i in ids]


def _imagenet_train_files(data_dir: Optional[PathLike]) -> tuple[list[Path], list[int]]:
    root = Path(data_dir or "./data") / "train"
    class_index = _imagenet_class_index()
    if not root.is_dir():
        raise DatasetNotFoundError(f"ImageNet training images not found: expected {root}/<wnid>/<file>.JPEG "
                                   "(the official training set, one folder per class)")
    files, labels = [], []
    for wnid in sorted(p.name for p in root.iterdir() if p.is_dir()):
        if wnid not in class_index:
            raise ValueError(f"{root / wnid} is not an ImageNet class folder (unknown wnid {wnid!r})")
        for path in sorted((root / wnid).iterdir()):
            if path.is_file():
                files.append(path)
                labels.append(class_index[wnid])
    if not files:
        raise DatasetNotFoundError(f"no images under {root}")
    return files, labels


def _open_imagenet(split: str, data_dir: Optional[PathLike], preprocessing: str = IMAGENET_DEFAULT_PREPROCESSING,
                   limit: Optional[int] = None) -> ImageFileDataset:
    """ImageNet's ``split``; for ``"test"`` only the first ``limit`` files of RobustBench's list are looked for (a
    folder holding the first 100 images serves ``n_examples=100``)."""
    _check_split(split)
    transform = imagenet_transform(preprocessing)
    if split == "test":
        files, labels = _imagenet_test_files(data_dir, limit)
    else:
        files, labels = _imagenet_train_files(data_dir)
        positions = _split_positions("imagenet", split, len(files))
        files, labels = [files[i] for i in positions], [labels[i] for i in positions]
    return ImageFileDataset(files, labels, transform, num_classes=1000)


def load_imagenet(split: str = "test", data_dir: Optional[PathLike] = None, n_examples: Optional[int] = None,
                  preprocessing: str = IMAGENET_DEFAULT_PREPROCESSING) -> tuple[torch.Tensor, torch.Tensor]:
    """RobustBench's ImageNet test images ``(N, 3, H, W)`` in ``[0, 1]`` and labels ``(N,)``.

    Images are read from ``<data_dir>/val/<wnid>/<file>`` (or ``<data_dir>/<wnid>/<file>``) and
    preprocessed as RobustBench does (``preprocessing``, see :data:`IMAGENET_PREPROCESSINGS`).
    """
    if split != "test":
        raise ValueError(f"load_imagenet reads the leaderboard's 'test' split, got {split!r}; "
                         "open_dataset('imagenet', 'train' | 'val') streams the training folder")
    return load_dataset("imagenet", split, n_examples, data_dir, preprocessing=preprocessing)


# -- by name -----------------------------------------------------------------------------------
#: ``opener(split, data_dir)`` of each data set; those in :data:`PREPROCESSINGS` also take ``preprocessing=`` and
#: ``limit=`` (how many test images are wanted) as keywords.
_OPENERS: dict[str, Callable[..., Dataset]] = {
    "fashion-mnist": _open_fashion_mnist,
    "cifar10": _open_cifar("cifar10", "CIFAR10", 10),
    "cifar100": _open_cifar("cifar100", "CIFAR100", 100),
    "imagenet": _open_imagenet,
}

#: The data sets whose image files are prepared by a named preprocessing: how messages name them, the
#: preprocessings they know and their default (RobustBench's). The others' images are used as they are.
PREPROCESSINGS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "imagenet": ("ImageNet", tuple(IMAGENET_PREPROCESSINGS), IMAGENET_DEFAULT_PREPROCESSING),
}


def available_datasets() -> list[str]:
    """Names :func:`load_dataset` and :func:`open_dataset` know."""
    return sorted(_OPENERS)


def dataset_key(name: str) -> str:
    """The :func:`canonical_dataset` name of a data set this module can open; unknown names are an error."""
    key = canonical_dataset(name)
    if key not in _OPENERS:
        raise ValueError(f"unknown dataset {name!r}; known: {available_datasets()}")
    return key


def preprocessing_for(dataset: str, preprocessing: Optional[str] = None,
                      config: Optional["ModelConfig"] = None) -> Optional[str]:
    """How ``dataset``'s images are prepared for a model: ``preprocessing`` when given, else the model config's own
    (a RobustBench entry's, e.g. ``BicubicRes256Crop224`` for ImageNet MixedNUTS) when the config is for that data
    set, else the data set's default (:data:`PREPROCESSINGS`); ``None`` for data sets whose images are used as they
    are. The one rule :func:`load_dataset`, :func:`open_dataset`, ``benchmark`` and ``certify`` follow.

    Raises:
        robust_mix.validate.InvalidInputError: ``preprocessing`` given for a data set without one (it would be
            recorded and never applied), or a name the data set does not know.
    """
    key = dataset_key(dataset)
    if key not in PREPROCESSINGS:
        if preprocessing is not None:
            titles = " and ".join(f"{title}'s" for title, _, _ in PREPROCESSINGS.values())
            raise InvalidInputError(f"preprocessing={preprocessing!r} applies to {titles} test images only; "
                                    f"{dataset}'s are used as they are: leave it out (--preprocessing)")
        return None
    _, known, default = PREPROCESSINGS[key]
    own = stated_preprocessing(dataset, config)
    return check_choice("preprocessing", preprocessing if preprocessing is not None else own or default, known)


def stated_preprocessing(dataset: str, config: Optional["ModelConfig"]) -> Optional[str]:
    """The preprocessing a model's config states for ``dataset``'s images (e.g. ``BicubicRes256Crop224``), or
    ``None`` when it states none or its config is for another data set (such an entry says nothing about these
    images). Not checked against the known names: :func:`preprocessing_for` does that."""
    own = getattr(config, "preprocessing", None)
    if own is None or canonical_dataset(getattr(config, "dataset", "") or "") != dataset_key(dataset):
        return None
    return own


def _open(name: str, split: str, n_examples: Optional[int], data_dir: Optional[PathLike],
          preprocessing: Optional[str], config: Optional["ModelConfig"]) -> tuple[Dataset, Optional[int]]:
    """``name``'s ``split`` opened for its first ``n_examples`` images (all when ``None``), and that count."""
    key = dataset_key(name)
    data_dir = check_path("data_dir", data_dir)
    n_examples = optional_positive_int("n_examples", n_examples)
    preprocessing = preprocessing_for(key, preprocessing, config)
    options: dict[str, Any] = {} if preprocessing is None else {"preprocessing": preprocessing, "limit": n_examples}
    dataset = _OPENERS[key](split, data_dir, **options)
    if n_examples is not None and n_examples > len(dataset):
        raise NotEnoughExamplesError(n_examples, name, split, len(dataset))
    return dataset, n_examples


def open_dataset(name: str, split: str = "train", n_examples: Optional[int] = None,
                 data_dir: Optional[PathLike] = None, *, preprocessing: Optional[str] = None,
                 config: Optional["ModelConfig"] = None) -> Dataset:
    """A split as a streamed data set of ``(image, label, position)`` items (first ``n_examples`` if given);
    ``data_dir`` may start with ``~`` (the home folder). ``preprocessing`` / ``config``: how ImageNet's images are
    prepared (:func:`preprocessing_for`: the name given, else ``config``'s, else RobustBench's default)."""
    dataset, n_examples = _open(name, split, n_examples, data_dir, preprocessing, config)
    if n_examples is not None:
        dataset = torch.utils.data.Subset(dataset, range(n_examples))
    return dataset


def load_dataset(name: str, split: str = "test", n_examples: Optional[int] = None,
                 data_dir: Optional[PathLike] = None, *, preprocessing: Optional[str] = None,
                 config: Optional["ModelConfig"] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_examples`` images and labels of a split (all when ``None``), images in ``[0, 1]``;
    ``data_dir`` may start with ``~`` (the home folder).

    ``preprocessing`` / ``config``: how ImageNet's images are prepared (:func:`preprocessing_for`): the name given,
    else the model config's (pass ``model.config`` to get the images a RobustBench entry is evaluated on), else
    RobustBench's default ``Res256Crop224``. Only the first ``n_examples`` ImageNet test files need to exist.
    """
    dataset, n_examples = _open(name, split, n_examples, data_dir, preprocessing, config)
    return dataset_tensors(dataset, n_examples)
