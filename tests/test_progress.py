"""Progress bars: one rule for when they are drawn (robust_mix.progress), --no-progress on every command that draws
them, no bars in a log file, $TQDM_DISABLE honoured, and log lines written above the bars, never into them."""
import io
import logging

import pytest
import torch

from robust_mix.cli import build_parser
from robust_mix.cli.benchmark import RowBars, TqdmProgress
from robust_mix.cli.train import TqdmBar
from robust_mix.certify import sample_counts
from robust_mix.progress import show_bars
from terminal import FakeTTY, screen

#: Every command that draws bars, with the arguments it needs to parse.
BAR_COMMANDS = [["benchmark", "fmnist-robust"], ["sweep", "fmnist-robust"], ["demo"],
                ["certify", "fmnist-robust", "--out", "o"], ["train", "fmnist-standard"]]


@pytest.mark.parametrize("argv", BAR_COMMANDS, ids=lambda argv: argv[0])
def test_every_command_that_draws_bars_can_be_told_not_to(argv):
    """train and certify took --no-progress; benchmark, sweep and demo refused it (an argument error), so a script
    could not turn their bars off the same way."""
    assert build_parser().parse_args([*argv, "--no-progress"]).no_progress is True
    assert build_parser().parse_args(argv).no_progress is False


@pytest.mark.parametrize("value, shown", [("1", False), ("True", False), ("yes", False), ("0", True), ("", True),
                                          ("false", True)])
def test_tqdm_disable_turns_bars_off(value, shown):
    assert show_bars(True, FakeTTY(), terminal_only=True, environ={"TQDM_DISABLE": value}) is shown
    assert show_bars(True, environ={"TQDM_DISABLE": value}) is shown
    assert show_bars(False, FakeTTY(), environ={}) is False


def _stage_bars(file):
    progress = TqdmProgress(file=file)
    progress.start(["clean", "apgd-ce"], 4)
    progress.advance("clean", 4)
    progress.advance("apgd-ce", 2)
    progress.close()


def _row_bars(file):
    with RowBars(["row"], file=file, refresh_s=0) as bars:
        bars.start(0, ["apgd-ce"], 4)
        bars.advance(0, "apgd-ce", 2)
        bars.finish(0)


def _epoch_bar(file):
    bar = TqdmBar("epoch 1/1", 4, 0, 8, file=file)
    bar.update(2, {"loss": 0.5})
    bar.close()


@pytest.mark.parametrize("draw", [_stage_bars, _row_bars, _epoch_bar], ids=["benchmark", "sweep-demo", "train"])
def test_the_commands_draw_no_bars_into_a_log_file_or_with_tqdm_disable(draw, monkeypatch):
    """Redirected to a file (CI, nohup), the commands wrote every redraw of every bar into it, carriage returns and
    all; $TQDM_DISABLE, tqdm's switch, was overridden by the bars' own disable=."""
    log = io.StringIO()  # not a terminal
    draw(log)
    assert log.getvalue() == ""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    terminal = FakeTTY()
    draw(terminal)
    assert terminal.getvalue() == ""
    monkeypatch.delenv("TQDM_DISABLE")
    draw(terminal)
    assert "%|" in terminal.getvalue()  # on a terminal they are drawn


def test_the_library_sampling_bar_honours_tqdm_disable(monkeypatch, capsys):
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.rand(2, 1, 2, 2)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    sample_counts(classifier, x, 4, 0.1, 3, progress=True, generator=torch.Generator().manual_seed(0))
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("TQDM_DISABLE")
    sample_counts(classifier, x, 4, 0.1, 3, progress=True, generator=torch.Generator().manual_seed(0))
    assert "sample" in capsys.readouterr().err  # asked for, it is drawn


@pytest.fixture
def console(monkeypatch):
    """A terminal with the CLI's console handler on it (logging.basicConfig)."""
    terminal = FakeTTY()
    root = logging.getLogger()
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    saved, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    yield terminal
    root.handlers[:] = saved
    root.setLevel(level)


def test_log_lines_during_a_benchmark_are_written_above_its_bars(console):
    """The benchmark's stage bars drew on the standard error while the console handler wrote there too: a log line
    landed on the end of a bar's line ('apgd-ce: 50%|... INFO robust_mix...') and the bar was redrawn over it."""
    progress = TqdmProgress(file=console)
    progress.start(["clean", "apgd-ce"], 4)
    progress.advance("clean", 4)
    progress.advance("apgd-ce", 2)
    logging.getLogger("robust_mix.benchmark").info("an INFO line")
    logging.getLogger("robust_mix.benchmark").warning("a warning")
    lines = [line for line in screen(console.getvalue())[0] if line]
    assert "INFO robust_mix.benchmark: an INFO line" in lines and "WARNING robust_mix.benchmark: a warning" in lines
    assert not any("%|" in line and "robust_mix.benchmark" in line for line in lines)
    progress.close()
    assert logging.getLogger().handlers[0].stream is console  # the console handler is back


def test_log_lines_during_training_are_written_above_the_epoch_bar(console, monkeypatch):
    """robust-mix train logged its step and epoch lines straight into the epoch bar's line."""
    from robust_mix.cli import train as cli_train

    def fake_run(config, out, dist, options):
        bar = options.progress("epoch 1/1", 4, 0, 8)
        bar.update(2, {"loss": 0.5})
        logging.getLogger("robust_mix.train.loop").info("epoch 1 step 2/4: loss 0.5")
        bar.update(2, {"loss": 0.4})
        bar.close()
        return {}

    monkeypatch.setattr("sys.stderr", console)  # (pytest's capture sets it anew after the fixtures)
    monkeypatch.setattr(cli_train, "run_recipe", fake_run)
    monkeypatch.setattr(cli_train, "check_recipe", lambda config: config)
    args = build_parser().parse_args(["train", "fmnist-standard", "--out", "o", "--device", "cpu"])
    assert cli_train._train_main(args) == 0
    lines = [line for line in screen(console.getvalue())[0] if line]
    assert "INFO robust_mix.train.loop: epoch 1 step 2/4: loss 0.5" in lines
    assert not any("%|" in line for line in lines)  # the bar, left=False, is gone; the log line stays


def test_only_rank_0_tells_a_sharded_run_at_info(monkeypatch):
    """Under torchrun every rank logged its INFO lines (the sweep's rows, the benchmark's result) beside rank 0's
    bars: one account per process. The other ranks now log warnings only, as train's do."""
    import types

    from robust_mix.cli import benchmark as cli_benchmark

    package = logging.getLogger("robust_mix")
    level = package.level
    args = types.SimpleNamespace(device="cpu")
    try:
        monkeypatch.setattr(cli_benchmark, "init_distributed", lambda device: types.SimpleNamespace(rank=0))
        assert cli_benchmark._init_distributed(args) == 0 and package.level == level  # rank 0 keeps its level
        monkeypatch.setattr(cli_benchmark, "init_distributed", lambda device: types.SimpleNamespace(rank=1))
        assert cli_benchmark._init_distributed(args) == 1
        assert package.getEffectiveLevel() == logging.WARNING
    finally:
        package.setLevel(level)  # (setLevel clears the loggers' cached levels)


def test_certify_model_draws_bars_by_default_only_on_a_terminal(capsys, monkeypatch):
    """certify_model defaulted to progress=True: a script or a job writing to a log got every redraw of the
    sampling bars. Its default now draws them on a terminal only; True and False still say yes and no."""
    from robust_mix import MixedClassifier
    from robust_mix.certification import certify_model
    from conftest import make_tiny

    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.6)
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    run = lambda **kw: certify_model(model, images, torch.arange(2), n0=2, n=4, radii=[0.0], **kw)  # noqa: E731
    run()
    assert "sample" not in capsys.readouterr().err  # the captured standard error is no terminal
    run(progress=True)
    assert "sample" in capsys.readouterr().err
    terminal = FakeTTY()
    monkeypatch.setattr("sys.stderr", terminal)
    run()
    monkeypatch.undo()
    assert "sample" in terminal.getvalue()
    with pytest.raises(TypeError, match="progress"):
        run(progress="yes")
