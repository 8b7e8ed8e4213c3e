"""Mixed precision (robust_mix.train.precision): bf16 autocast on CPUs, fp16 with a gradient scaler,
float32 master weights."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robust_mix.io import load_state_dict
from robust_mix.train import read_history, train_adasmooth, train_backbone
from robust_mix.train.precision import Precision
from train_fixtures import tiny_adasmooth, tiny_backbone_recipe

torch.set_num_threads(1)


@pytest.mark.parametrize("name, dtype, scaled", [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False),
                                                 ("fp16", torch.float16, True)])
def test_precisions_autocast_and_scale(name, dtype, scaled):
    precision = Precision(name, "cpu")
    conv = nn.Conv2d(1, 2, 3)
    with precision.autocast():
        out = conv(torch.rand(1, 1, 5, 5))
    assert out.dtype == dtype and conv.weight.dtype == torch.float32
    assert precision.scaler().is_enabled() == scaled
    with pytest.raises(ValueError, match="precision must be one of"):
        Precision("fp8")


def test_bf16_adasmooth_smoke(tiny_data, tiny_bases, tmp_path):
    """Bases, attacks and the mixing network under bf16 autocast; the trained weights stay float32."""
    record = train_adasmooth(tiny_adasmooth(tiny_bases, precision="bf16", max_steps_per_epoch=2), tmp_path / "bf16")
    state = load_state_dict(tmp_path / "bf16" / "policy.safetensors")
    assert all(v.dtype == torch.float32 for k, v in state.items() if "num_batches" not in k)
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"])
    assert 0.0 <= record["val_detect_adv"] <= 1.0
    buffer = load_state_dict(next((tmp_path / "bf16" / "buffer" / "round-0").iterdir()))
    assert buffer["delta"].dtype == torch.float16 and buffer["delta"].abs().max() <= 0.1 * 1.1 + 1e-3


def test_fp16_backbone_trains_with_a_gradient_scaler(tiny_data, tmp_path):
    config = tiny_backbone_recipe(precision="fp16", epochs=1, max_steps_per_epoch=3)
    train_backbone(config, tmp_path / "fp16")
    state = torch.load(tmp_path / "fp16" / "checkpoint.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0  # the scaler's state is checkpointed for resuming
    assert all(v.dtype == torch.float32 for k, v in state["model"].items() if v.is_floating_point())
    assert math.isfinite(read_history(tmp_path / "fp16")[-1]["train_loss"])
