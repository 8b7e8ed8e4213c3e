"""The Fashion-MNIST loader and its fixed train/validation split."""
from __future__ import annotations

import pytest
import torch

from robust_mix import data
from robust_mix.data import DatasetNotFoundError, VAL_SIZE, load_dataset, load_fashion_mnist, split_indices

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
