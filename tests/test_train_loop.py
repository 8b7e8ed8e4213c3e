"""The one training loop (robust_mix.train.loop) on a tiny linear task: accumulation, schedule, clipping,
progress, resume, model selection."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import Dataset

from robust_mix.distributed import DistContext
from robust_mix.train.config import Schedule
from robust_mix.train.loop import RunOptions, TrainTask, epoch_indices, fit, plan_steps, warmup_cosine
from robust_mix.train.run_dir import RunDir

torch.set_num_threads(1)


class Points(Dataset):
    """``(x, y, position)`` items of a noisy linear regression."""

    def __init__(self, n: int = 64, d: int = 5) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, d, generator=gen)
        self.y = self.x @ torch.arange(1.0, d + 1) + 0.1 * torch.randn(n, generator=gen)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], i


class Regression(TrainTask):
    higher_is_better = False

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.trained = nn.Linear(5, 1)
        self.data, self.saved = Points(), []

    def train_set(self, epoch: int) -> Dataset:
        return self.data

    def loss(self, model, batch, generator):
        loss = ((model(batch[0])[:, 0] - batch[1]) ** 2).mean()
        return loss, {"loss": loss.item()}

    def evaluate(self, epoch: int) -> dict[str, float]:
        with torch.no_grad():
            mse = ((self.trained(self.data.x)[:, 0] - self.data.y) ** 2).mean().item()
        return {"val_mse": mse, "score": mse}

    def save_best(self) -> None:
        self.saved.append({k: v.clone() for k, v in self.trained.state_dict().items()})


def run(tmp_path, name: str, options: RunOptions | None = None, **schedule) -> tuple[Regression, list[dict]]:
    config = Schedule(**{"epochs": 2, "batch_size": 16, "lr": 0.05, **schedule})
    task = Regression()
    folder = RunDir(tmp_path / name, config)
    folder.start()
    return task, fit(task, config, folder, DistContext(), options)


def test_accumulation_computes_the_same_steps(tmp_path):
    whole, _ = run(tmp_path, "a1", accumulation=1)
    parts, _ = run(tmp_path, "a4", accumulation=4)
    for key, value in whole.trained.state_dict().items():
        torch.testing.assert_close(parts.trained.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_history_model_selection_and_step_cap(tmp_path):
    task, history = run(tmp_path, "r", epochs=3, max_steps_per_epoch=2)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert all(r["images_per_s"] > 0 and r["train_loss"] > 0 for r in history)
    scores = [r["val_mse"] for r in history]
    assert history[-1]["best"] == min(scores)
    assert len(task.saved) == sum(s == min(scores[:i + 1]) for i, s in enumerate(scores))  # saved on each improvement


def test_warmup_then_cosine_schedule():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[2:] == sorted(lrs[2:], reverse=True) and lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_gradients_are_clipped_before_each_step(tmp_path):
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
    handle = register_optimizer_step_pre_hook(record)
    try:
        run(tmp_path, "clipped", grad_clip=0.5)
        clipped = list(norms)
        norms.clear()
        run(tmp_path, "free")
    finally:
        handle.remove()
    assert max(clipped) <= 0.5 + 1e-6 and max(norms) > 0.5


def test_progress_is_reported_per_step_and_resumes_where_it_stopped(tmp_path):
    calls = []

    class Bar:
        def __init__(self, description, total, done, per_step):
            calls.append([description, total, done, per_step, 0])

        def update(self, steps, postfix):
            calls[-1][-1] += steps
            assert "loss" in postfix

        def close(self):
            pass

    run(tmp_path, "p", RunOptions(progress=Bar))
    assert calls == [["epoch 1/2", 4, 0, 16, 4], ["epoch 2/2", 4, 0, 16, 4]]


def test_a_rank_takes_its_share_of_each_global_batch():
    config = Schedule(batch_size=8)
    one = epoch_indices(40, plan_steps(config, 40, DistContext()), config, 3, DistContext())
    two = [epoch_indices(40, plan_steps(config, 40, DistContext(rank=r, world_size=2)), config, 3,
                         DistContext(rank=r, world_size=2)) for r in (0, 1)]
    for step in range(5):
        assert sorted(one[8 * step:8 * step + 8]) == sorted(two[0][4 * step:4 * step + 4] + two[1][4 * step:4 * step + 4])
    assert one != epoch_indices(40, plan_steps(config, 40, DistContext()), config, 4, DistContext())  # reshuffled


class Diverging(Regression):
    """The loss turns NaN from the 6th micro-batch on (epoch 2, step 2 at 4 steps per epoch)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def loss(self, model, batch, generator):
        loss, metrics = super().loss(model, batch, generator)
        self.calls += 1
        return (loss * float("nan"), metrics) if self.calls >= 6 else (loss, metrics)


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_a_diverging_run_stops_at_the_step_and_keeps_its_last_checkpoint(tmp_path, grad_clip):
    from robust_mix.train.loop import TrainingDivergedError

    config = Schedule(epochs=3, batch_size=16, lr=0.05, grad_clip=grad_clip)
    folder = RunDir(tmp_path / "run", config)
    folder.start()
    task = Diverging()
    with pytest.raises(TrainingDivergedError, match="training diverged at epoch 2, step 2: the gradients are not finite"):
        fit(task, config, folder, DistContext())
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(torch.isfinite(v).all() for saved in task.saved for v in saved.values())  # no NaN "best" weights


def test_an_fp16_run_whose_scaler_skips_every_step_of_an_epoch_stops(tmp_path):
    """fp16's gradient scaler skips a step whose gradients are not finite, by design; a run whose every step was
    skipped trained nothing, finished with exit 0 and kept its first weights as the "best"."""
    from robust_mix.train.loop import TrainingDivergedError

    config = Schedule(epochs=3, batch_size=16, lr=0.05, precision="fp16")
    folder = RunDir(tmp_path / "run", config)
    folder.start()
    with pytest.raises(TrainingDivergedError, match=r"skipped every step of epoch 3 \(4\)"):
        fit(Diverging(), config, folder, DistContext())  # epoch 2 still has one finite step
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 2
