"""The adversarial buffer of adaptive smoothing: what each example is, atomic resumable shards, sharding."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from robust_mix.data import ImageArrayDataset
from robust_mix.distributed import DistContext
from robust_mix.io import load_state_dict
from robust_mix.losses import dlr_loss_targeted
from robust_mix.train.buffer import (BufferDataset, attack_batch, buffer_fingerprint, generate_buffer,
                                     generate_shards, shard_path)
from robust_mix.train.pair import build_mixed
from train_fixtures import synthetic_arrays, tiny_adasmooth

torch.set_num_threads(1)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def setup(tiny_bases):
    config = tiny_adasmooth(tiny_bases, n_targets=2, iter_min=3, iter_max=3, buffer_subset=10, buffer_shard=4)
    images = ImageArrayDataset(*synthetic_arrays(10), num_classes=10)
    model = build_mixed(config, images[0][0][None], 10)
    return config, images, model


def test_examples_untargeted_then_targeted_within_their_radius(setup):
    config, images, model = setup
    x = torch.stack([images[i][0] for i in range(6)])
    y = torch.tensor([images[i][1] for i in range(6)])
    model.train()
    adv = attack_batch(model, x, y, config, seed=7)
    assert adv.shape == (6, 3, 1, 28, 28)
    radius = (adv - x[:, None]).abs().amax(dim=(2, 3, 4))
    assert (radius <= config.eps * config.eps_hi + 1e-6).all() and (radius > 0).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert model.training and model.policy.scale_alpha is None  # modes restored
    model.eval()
    with torch.no_grad():
        ranks = model(x).argsort(1, descending=True)
        for kind in (1, 2):  # targeted kinds move towards the top-(kind + 1) class
            before = dlr_loss_targeted(model(x), y, ranks[:, kind])
            after = dlr_loss_targeted(model(adv[:, kind]), y, ranks[:, kind])
            assert after.mean() > before.mean()
    again = attack_batch(model, x, y, config, seed=7)
    assert torch.equal(adv, again)  # seeded


def test_shards_are_resumable_and_shared_between_ranks(setup, tmp_path, monkeypatch):
    config, images, model = setup
    generate_buffer(model, images, config, tmp_path / "one", DistContext())
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == ["shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    reference = {name: load_state_dict(tmp_path / "one" / name) for name in files}
    # two processes: rank r generates shards r, r + 2, ...; together the same bytes as one process
    assert generate_shards(model, images, config, tmp_path / "two", DistContext(rank=1, world_size=2)) == [1]
    assert generate_shards(model, images, config, tmp_path / "two", DistContext(rank=0, world_size=2)) == [0, 2]
    for name in files:
        assert_same(load_state_dict(tmp_path / "two" / name), reference[name])
    # after a kill: finished shards are kept, the missing one is regenerated identically
    shard_path(tmp_path / "one", 1).unlink()
    assert generate_shards(model, images, config, tmp_path / "one", DistContext()) == [1]
    assert_same(load_state_dict(shard_path(tmp_path / "one", 1)), reference["shard-00001.safetensors"])
    with pytest.raises(ValueError, match="different recipe"):
        generate_shards(model, images, dataclasses.replace(config, w_max=0.1), tmp_path / "one", DistContext())


def test_buffer_items_pair_each_example_with_its_clean_image(setup, tmp_path):
    config, images, model = setup
    generate_buffer(model, images, config, tmp_path, DistContext())
    pairs = BufferDataset(images, tmp_path, config)
    assert len(pairs) == 10 * 3
    for j in (0, 5, 29):
        clean, adv, label, position = pairs[j]
        image = j // 3
        assert torch.equal(clean, images[image][0]) and label == images[image][1] and position == j
        assert (adv - clean).abs().max() <= config.eps * config.eps_hi + 1e-4
    assert not torch.equal(pairs[3][1], pairs[4][1])  # two kinds of the same image differ
    assert '"n_targets": 2' in buffer_fingerprint(config)
