"""Data sets (robust_mix.data): the fixed train/validation splits, as tensors and as streamed data sets."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from robust_mix import data
from robust_mix.data import DatasetCorruptError, DatasetNotFoundError, VAL_SIZE, load_dataset, load_fashion_mnist, split_indices

needs_fmnist = pytest.mark.skipif(not (data.DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Fashion-MNIST (dataset-fashion-mnist) not installed")


def test_split_indices_partition_and_fixed():
    train, val = split_indices(1000, val_size=100)
    assert len(train) == 900 and len(val) == 100
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    again_train, again_val = split_indices(1000, val_size=100)
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    _, other_val = split_indices(1000, val_size=100, seed=1)
    assert not torch.equal(val, other_val)


@needs_fmnist
def test_fashion_mnist_splits_sizes_range_disjoint():
    train_x, train_y = load_fashion_mnist("train")
    val_x, val_y = load_fashion_mnist("val")
    test_x, test_y = load_fashion_mnist("test")
    assert train_x.shape == (60000 - VAL_SIZE, 1, 28, 28) and val_x.shape == (VAL_SIZE, 1, 28, 28)
    assert test_x.shape == (10000, 1, 28, 28) and len(test_y) == 10000
    for x, y in ((train_x, train_y), (val_x, val_y)):
        assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
        assert y.dtype == torch.int64 and set(y.unique().tolist()) == set(range(10))
    # the validation images are not training images (compare raw bytes of a sample)
    train_keys = {bytes(row) for row in (train_x[:, 0].reshape(len(train_x), -1) * 255).byte().numpy()}
    val_keys = [bytes(row) for row in (val_x[:500, 0].reshape(500, -1) * 255).byte().numpy()]
    assert sum(k in train_keys for k in val_keys) <= 5  # Fashion-MNIST has a few exact duplicates
    assert torch.equal(load_fashion_mnist("val")[1], val_y)  # fixed across calls


@needs_fmnist
def test_load_dataset_names_and_subsets():
    x, y = load_dataset("fmnist", "val", n_examples=7)
    assert x.shape == (7, 1, 28, 28) and len(y) == 7
    with pytest.raises(ValueError, match="asked for"):
        load_dataset("fashion-mnist", "val", n_examples=VAL_SIZE + 1)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")


def test_canonical_dataset_names():
    from robust_mix.data import canonical_dataset

    assert [canonical_dataset(n) for n in ("FMNIST", "Fashion_MNIST", "fashionmnist", "CIFAR10")] == [
        "fashion-mnist", "fashion-mnist", "fashion-mnist", "cifar10"]


def test_missing_files_raise_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("ROBUST_MIX_DATA", raising=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist") as info:
        load_fashion_mnist("val")
    assert "ROBUST_MIX_DATA" in str(info.value) and str(tmp_path / "nowhere") in str(info.value)


def test_an_explicit_data_dir_comes_before_the_system_copy(monkeypatch, tmp_path, caplog):
    """A data_dir the caller names is read first; a missing one falls back with a warning, never silently."""
    import gzip

    import numpy as np

    def idx(array: np.ndarray, code: int) -> bytes:
        header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        return gzip.compress(header + array.tobytes())

    own = tmp_path / "own"
    own.mkdir()
    (own / "t10k-images-idx3-ubyte.gz").write_bytes(idx(np.full((3, 28, 28), 255, np.uint8), 8))
    (own / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(np.array([7, 7, 7], np.uint8), 8))
    system = tmp_path / "system"
    system.mkdir()
    (system / "t10k-images-idx3-ubyte.gz").write_bytes(idx(np.zeros((4, 28, 28), np.uint8), 8))
    (system / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(np.array([1, 2, 3, 4], np.uint8), 8))
    monkeypatch.setenv("ROBUST_MIX_DATA", str(system))
    x, y = load_fashion_mnist("test", data_dir=own)
    assert x.shape == (3, 1, 28, 28) and bool((x == 1).all()) and y.tolist() == [7, 7, 7]
    with caplog.at_level("WARNING", logger="robust_mix.data"):
        x, y = load_fashion_mnist("test", data_dir=tmp_path / "missing")
    assert y.tolist() == [1, 2, 3, 4]
    assert "not in data_dir" in caplog.text and str(system) in caplog.text


@pytest.mark.parametrize("given", ["missing", "empty", "one file only"])
def test_a_robust_mix_data_folder_without_the_files_is_named_when_another_copy_is_read(monkeypatch, tmp_path, caplog,
                                                                                      given):
    """A mistyped or empty $ROBUST_MIX_DATA read the system copy without a word (data_dir's fallback is warned)."""
    system = tmp_path / "system"
    system.mkdir()
    (system / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(_IMAGES))
    (system / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(_LABELS))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", system)
    named = tmp_path / "mine"
    if given != "missing":
        named.mkdir()
    if given == "one file only":
        (named / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(_IMAGES))
    monkeypatch.setenv("ROBUST_MIX_DATA", str(named))
    with caplog.at_level("WARNING", logger="robust_mix.data"):
        assert load_fashion_mnist("test")[1].tolist() == [1, 2, 3]
    assert f"Fashion-MNIST is not in ROBUST_MIX_DATA {named}; read the copy in {system} instead" in caplog.text
    caplog.clear()
    monkeypatch.setenv("ROBUST_MIX_DATA", str(system))
    with caplog.at_level("WARNING", logger="robust_mix.data"):
        load_fashion_mnist("test")
    assert "is not in" not in caplog.text  # read where it was asked for: nothing to say


def _idx(array, code: int = 8, magic: bytes | None = None) -> bytes:
    """An IDX file (gzip-compressed) holding ``array``; ``magic`` replaces its first four bytes."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress((magic or header[:4]) + header[4:] + array.tobytes())


_IMAGES = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
_LABELS = np.array([1, 2, 3], np.uint8)
CORRUPT = [
    ("truncated download", lambda: (_idx(_IMAGES)[:-40], _idx(_LABELS)), "t10k-images-idx3-ubyte.gz",
     "is truncated or corrupt"),
    ("not gzip", lambda: (b"<html>404</html>", _idx(_LABELS)), "t10k-images-idx3-ubyte.gz", "is not a gzip file"),
    ("empty file", lambda: (gzip.compress(b""), _idx(_LABELS)), "t10k-images-idx3-ubyte.gz", "no IDX header"),
    ("wrong magic number", lambda: (_idx(_IMAGES, magic=b"PK\x03\x04"), _idx(_LABELS)), "t10k-images-idx3-ubyte.gz",
     "magic number"),
    ("int32 pixels", lambda: (_idx(_IMAGES.astype(">i4"), code=0x0C), _idx(_LABELS)), "t10k-images-idx3-ubyte.gz",
     "unsigned bytes"),
    ("missing pixels", lambda: (gzip.compress(gzip.decompress(_idx(_IMAGES))[:-28]), _idx(_LABELS)),
     "t10k-images-idx3-ubyte.gz", "header promises 2352 bytes of data, the file holds 2324"),
    ("labels file as images", lambda: (_idx(_LABELS), _idx(_LABELS)), "t10k-images-idx3-ubyte.gz",
     "(N, 28, 28) images"),
    ("images file as labels", lambda: (_idx(_IMAGES), _idx(_IMAGES)), "t10k-labels-idx1-ubyte.gz",
     "(N,) labels"),
    ("fewer labels than images", lambda: (_idx(_IMAGES), _idx(_LABELS[:2])), "holds 2 labels",
     "from the same download"),
    ("label 12 of 10 classes", lambda: (_idx(_IMAGES), _idx(np.array([1, 12, 3], np.uint8))), "labels must lie in [0, 10)",
     "got [12]"),
    ("14x14 images", lambda: (_idx(_IMAGES[:, :14, :14]), _idx(_LABELS)), "t10k-images-idx3-ubyte.gz", "(N, 28, 28)"),
]


@pytest.mark.parametrize("files, names, why", [pytest.param(f, n, w, id=i) for i, f, n, w in CORRUPT])
def test_corrupt_files_are_named_never_read(tmp_path, files, names, why):
    """A damaged or mismatched file is refused, naming it and what is wrong, instead of giving wrong images."""
    images, labels = files()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(images)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(labels)
    with pytest.raises(DatasetCorruptError) as info:
        load_fashion_mnist("test", data_dir=tmp_path)
    assert names in str(info.value) and why in str(info.value)
    assert str(tmp_path) in str(info.value) and isinstance(info.value, ValueError)


def test_an_unofficial_image_count_is_warned_about(tmp_path, caplog):
    """Test files in the train names (or a subset) load, but never silently: the count is not the official one."""
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(_idx(_IMAGES))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(_idx(_LABELS))
    with caplog.at_level("WARNING", logger="robust_mix.data"):
        data._fashion_mnist_arrays("train", tmp_path)
    assert "3 images, not the official 60000" in caplog.text


# -- streamed data sets ----------------------------------------------------------------------------
@needs_fmnist
def test_streamed_splits_are_the_tensor_splits():
    """open_dataset and load_dataset read the same split, image for image (the fixed validation split)."""
    from robust_mix.data import open_dataset

    for split in ("train", "val", "test"):
        x, y = load_dataset("fashion-mnist", split)
        stream = open_dataset("fashion-mnist", split)
        assert len(stream) == len(y)
        for i in (0, 1234 % len(y), len(y) - 1):
            image, label, position = stream[i]
            assert torch.equal(image, x[i]) and label == y[i] and position == i
    assert open_dataset("fashion-mnist", "train").images is open_dataset("fashion-mnist", "val").images  # decoded once
    first = open_dataset("fmnist", "val", n_examples=3)
    assert len(first) == 3 and torch.equal(first[2][0], load_dataset("fashion-mnist", "val")[0][2])
    with pytest.raises(ValueError, match="asked for"):
        open_dataset("fashion-mnist", "val", n_examples=VAL_SIZE + 1)


def test_array_datasets_convert_one_image_at_a_time():
    import numpy as np

    from robust_mix.data import ImageArrayDataset, dataset_tensors, num_classes

    rgb = np.arange(4 * 2 * 3 * 3, dtype=np.uint8).reshape(4, 2, 3, 3)  # (N, H, W, C) like CIFAR
    dataset = ImageArrayDataset(rgb, np.array([0, 1, 2, 1]), indices=np.array([3, 1]), num_classes=3)
    image, label, position = dataset[0]
    assert image.shape == (3, 2, 3) and label == 1 and position == 0
    assert torch.equal(image, torch.from_numpy(rgb[3]).permute(2, 0, 1).float() / 255)
    images, labels = dataset_tensors(dataset)
    assert images.shape == (2, 3, 2, 3) and labels.tolist() == [1, 1] and num_classes(dataset) == 3
    with pytest.raises(ValueError, match="uint8"):
        ImageArrayDataset(rgb.astype(np.float32), np.zeros(4))


def test_imagenet_training_folders_stream_with_robustbench_preprocessing(tmp_path, monkeypatch):
    from PIL import Image

    from robust_mix.data import open_dataset

    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "train" / wnid).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (300, 260), color=(i * 40, 10, 200)).save(tmp_path / "train" / wnid / f"{i}.JPEG")
    monkeypatch.setitem(data.VAL_SIZES, "imagenet", 2)
    train, val = open_dataset("imagenet", "train", data_dir=tmp_path), open_dataset("imagenet", "val", data_dir=tmp_path)
    assert len(train) == 4 and len(val) == 2
    image, label, _ = train[0]
    assert image.shape == (3, 224, 224) and label in (0, 1)  # Res256Crop224
    labels = sorted(train[i][1] for i in range(4)) + sorted(val[i][1] for i in range(2))
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(DatasetNotFoundError, match="train"):
        open_dataset("imagenet", "train", data_dir=tmp_path / "nowhere")


def test_damaged_imagenet_images_are_named(tmp_path):
    from PIL import Image

    from robust_mix.data import ImageFileDataset, imagenet_transform

    good, truncated, text = tmp_path / "good.JPEG", tmp_path / "truncated.JPEG", tmp_path / "page.JPEG"
    Image.new("RGB", (300, 260), color=(90, 10, 200)).save(good)
    truncated.write_bytes(good.read_bytes()[:200])
    text.write_text("<html>quota exceeded</html>")
    dataset = ImageFileDataset([good, truncated, text], [0, 1, 2], imagenet_transform(), num_classes=1000)
    assert dataset[0][0].shape == (3, 224, 224)
    for position, path in ((1, truncated), (2, text)):
        with pytest.raises(DatasetCorruptError, match=str(path.name)):
            dataset[position]


def _cifar_folder(tmp_path, cls_name):
    """A torchvision CIFAR folder whose files are tiny fakes; the official checksums are patched to match."""
    import hashlib
    import pickle

    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    folder = tmp_path / cls.base_folder
    folder.mkdir()
    label_key = "labels" if cls_name == "CIFAR10" else "fine_labels"
    checksums = {}
    for name, _ in [*cls.train_list, *cls.test_list]:
        blob = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), label_key: [1, 2]})
        (folder / name).write_bytes(blob)
        checksums[name] = hashlib.md5(blob).hexdigest()
    meta = pickle.dumps({cls.meta["key"]: [f"c{i}" for i in range(100)]})
    (folder / cls.meta["filename"]).write_bytes(meta)
    patched = {"train_list": [[n, checksums[n]] for n, _ in cls.train_list],
               "test_list": [[n, checksums[n]] for n, _ in cls.test_list],
               "meta": {**cls.meta, "md5": hashlib.md5(meta).hexdigest()}}
    return cls, folder, patched


@pytest.mark.parametrize("cls_name", ["CIFAR10", "CIFAR100"])
def test_a_cifar_archive_folder_given_as_the_root_is_named_with_its_parent(tmp_path, monkeypatch, cls_name):
    """data_dir=<root>/cifar-10-batches-py looked for <root>/cifar-10-batches-py/cifar-10-batches-py, tried a
    download into the archive folder and failed with a network error; it now asks for the parent."""
    cls, folder, patched = _cifar_folder(tmp_path, cls_name)
    for attr, value in patched.items():
        monkeypatch.setattr(cls, attr, value)
    monkeypatch.setattr(cls, "download", lambda self: pytest.fail("no download is tried"))
    data._cifar_arrays.cache_clear()
    with pytest.raises(DatasetNotFoundError, match=rf"{folder} is the {cls_name} archive folder itself.*pass its "
                                                   rf"parent {tmp_path} as data_dir \(--data-dir\)"):
        load_dataset(cls_name.lower(), "test", 2, data_dir=folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [n for n, _ in [*cls.train_list, *cls.test_list]] + [cls.meta["filename"]])  # nothing written into it
    assert load_dataset(cls_name.lower(), "test", 2, data_dir=tmp_path)[1].tolist() == [1, 2]
    data._cifar_arrays.cache_clear()


@pytest.mark.parametrize("cls_name", ["CIFAR10", "CIFAR100"])
def test_cifar_folders_are_checked_file_by_file(tmp_path, monkeypatch, cls_name):
    cls, folder, patched = _cifar_folder(tmp_path, cls_name)
    for attr, value in patched.items():
        monkeypatch.setattr(cls, attr, value)
    data._cifar_arrays.cache_clear()
    images, labels = data._cifar_arrays(cls_name, tmp_path, False)
    assert images.shape == (2, 32, 32, 3) and labels.tolist() == [1, 2]
    test_file = folder / cls.test_list[0][0]
    test_file.write_bytes(test_file.read_bytes()[:-7])  # truncated
    data._cifar_arrays.cache_clear()
    with pytest.raises(DatasetCorruptError, match=f"{test_file.name}.*MD5"):
        data._cifar_arrays(cls_name, tmp_path, False)
    test_file.unlink()
    data._cifar_arrays.cache_clear()
    with pytest.raises(DatasetNotFoundError, match=f"{test_file.name} is missing"):
        data._cifar_arrays(cls_name, tmp_path, False)
    data._cifar_arrays.cache_clear()


def test_imagenet_test_images_follow_the_named_or_the_model_s_preprocessing(tmp_path):
    """load_dataset took no preprocessing: ImageNet images were always Res256Crop224, whatever the model entry said
    (imagenet-mixednuts: BicubicRes256Crop224), and it looked for all 5,000 test files when 2 were wanted."""
    from conftest import write_fake_imagenet

    from robust_mix import ModelConfig
    from robust_mix.validate import InvalidInputError

    write_fake_imagenet(tmp_path, 2)  # only the 2 images asked for exist
    default, _ = load_dataset("imagenet", "test", 2, tmp_path)
    bicubic, labels = load_dataset("imagenet", "test", 2, tmp_path, preprocessing="BicubicRes256Crop224")
    assert default.shape == bicubic.shape == (2, 3, 224, 224) and not torch.equal(default, bicubic)
    config = ModelConfig(name="entry", dataset="imagenet", eps=4 / 255, preprocessing="BicubicRes256Crop224")
    own, own_labels = load_dataset("imagenet", "test", 2, tmp_path, config=config)
    assert torch.equal(own, bicubic) and torch.equal(own_labels, labels)
    assert torch.equal(load_dataset("imagenet", "test", 2, tmp_path, preprocessing="Res256Crop224", config=config)[0],
                       default)  # the name given wins over the entry's
    crop, _ = load_dataset("imagenet", "test", 2, tmp_path, preprocessing="Crop288")
    assert crop.shape == (2, 3, 288, 288)
    streamed = data.open_dataset("imagenet", "test", 2, tmp_path, config=config)
    assert torch.equal(streamed[1][0], bicubic[1])
    assert data.load_imagenet(data_dir=tmp_path, n_examples=2, preprocessing="BicubicRes256Crop224")[0].equal(bicubic)
    # an entry for another data set says nothing about ImageNet's images
    other = ModelConfig(name="other", dataset="cifar10", eps=8 / 255)
    assert data.preprocessing_for("imagenet", None, other) == "Res256Crop224"
    assert data.preprocessing_for("ImageNet", None, config) == "BicubicRes256Crop224"
    assert data.preprocessing_for("fmnist", None, config) is None
    with pytest.raises(InvalidInputError, match="preprocessing='Res224' applies to ImageNet's test images only"):
        load_dataset("fashion-mnist", "test", 2, preprocessing="Res224")
    for bad in ("Bicubic", "", 3):  # never the default in their place
        with pytest.raises(InvalidInputError, match="preprocessing must be one of"):
            load_dataset("imagenet", "test", 2, tmp_path, preprocessing=bad, config=config)
    with pytest.raises(DatasetNotFoundError, match="1 of RobustBench's ImageNet test images are missing"):
        load_dataset("imagenet", "test", 3, tmp_path)
