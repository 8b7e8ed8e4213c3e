"""The command line: list and info, and what every subcommand's --help says."""
from robust_mix.cli import format_table, main


def test_list_prints_a_table(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["name", "dataset", "threat"]
    assert any(line.startswith("mix ") for line in out.splitlines())


def test_list_with_no_match_fails(capsys):
    assert main(["list", "nothing-*"]) == 1
    assert "no model matches" in capsys.readouterr().err


def test_info_and_json(capsys):
    assert main(["info", "mix"]) == 0
    assert "alpha: 0.5" in capsys.readouterr().out
    assert main(["info", "mix", "--json"]) == 0
    assert '"name": "mix"' in capsys.readouterr().out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["info", "mixx"]) == 2
    assert "unknown model 'mixx'; did you mean ['mix']" in capsys.readouterr().err


def test_format_table_aligns_columns():
    text = format_table(["a", "bb"], [["long", 1], ["x", None]])
    lines = text.splitlines()
    assert lines[0] == "a     bb" and lines[2] == "long  1" and lines[3] == "x"


def test_a_path_argument_starting_with_a_tilde_is_under_the_home_folder(tmp_path, monkeypatch):
    """``--out=~/cards/x.md`` reaches the program unexpanded (no shell expands '~' after '='): it wrote into a
    folder literally named '~' in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["card", "fmnist-robust", "--out=~/cards/fmnist-robust.md"]) == 0
    assert (tmp_path / "home" / "cards" / "fmnist-robust.md").read_text().startswith("---")
    assert not (tmp_path / "~").exists()


def _subcommands() -> dict:
    """Each subcommand's parser, by name."""
    import argparse

    from robust_mix.cli import build_parser

    main(["list", "nothing-*"])  # imports the command modules
    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_that_takes_a_value_says_what_it_is():
    """--seed, --batch-size, certify's --split, --n-examples, --data-dir and --device had no help at all."""
    silent = [f"{name} {action.option_strings[0]}" for name, sub in _subcommands().items() for action in sub._actions
              if action.option_strings and action.nargs != 0 and not action.help]
    assert silent == []


def test_help_gives_the_units_of_budgets_ratios_and_seeds(capsys):
    """--eps said "budget, e.g. 8/255" without its scale (8 or 8/255?), save's --alpha not which end is robust."""
    helps = {name: {option: action.help or "" for action in sub._actions for option in action.option_strings}
             for name, sub in _subcommands().items()}
    for name in ("benchmark", "sweep", "leaderboard"):
        assert "[0, 1] pixel scale" in helps[name]["--eps"] and "8/255 or 0.0314, not 8" in helps[name]["--eps"]
    for name in ("benchmark", "sweep", "certify"):
        assert "from 0 to 2**64 - 1" in helps[name]["--seed"]
        assert "1 to 1024" in helps[name]["--threads"]
    assert "[0, 1] image units" in helps["certify"]["--sigma"] and "[0, 1] pixel scale" in helps["certify"]["--radii"]
    assert "default 0.25)" in helps["certify"]["--sigma"]  # the library's default, shown though the option is None
    for name in ("save", "push"):
        assert "in [0, 1]" in helps[name]["--alpha"] and "1 = the robust base alone" in helps[name]["--alpha"]
    assert "pixel scale" in helps["train"]["--set"]
    assert "ROBUST_MIX_DATA" in helps["benchmark"]["--data-dir"]
    assert "cifar-10-batches-py" in helps["certify"]["--data-dir"]


def _stdout_to_a_closed_pipe(monkeypatch):
    """Standard output as a shell gives ``robust-mix ... | head -1`` once ``head`` has exited: a buffered pipe
    whose read end is closed (Python ignores SIGPIPE, so a write fails with BrokenPipeError)."""
    import io
    import os
    import sys

    read, write = os.pipe()
    os.close(read)
    stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write, "w")), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stream)
    return stream


def _ends_quietly_on_a_closed_output(monkeypatch, capsys, argv, expected_err=""):
    from robust_mix.cli import EXIT_BROKEN_PIPE

    capsys.readouterr()
    stream = _stdout_to_a_closed_pipe(monkeypatch)
    try:
        assert main(argv) == EXIT_BROKEN_PIPE == 141
        # what is still buffered goes nowhere: the interpreter's flush at exit printed
        # "Exception ignored in: <_io.TextIOWrapper name='<stdout>'> BrokenPipeError" and exited with 120
        stream.write("more\n")
        stream.flush()
    finally:
        stream.close()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Broken pipe" not in err and "error:" not in err, err
    assert expected_err in err


def test_a_reader_that_stops_early_ends_the_command_quietly(monkeypatch, capsys):
    """``robust-mix list | head -1``: the table is buffered and its write fails at exit (``Exception ignored ...
    BrokenPipeError``, status 120); a longer output failed inside the command (``error: [Errno 32] Broken pipe``)."""
    _ends_quietly_on_a_closed_output(monkeypatch, capsys, ["list"])
    _ends_quietly_on_a_closed_output(monkeypatch, capsys, ["info", "fmnist-adasmooth", "--json"])
    _ends_quietly_on_a_closed_output(monkeypatch, capsys, ["--help"])
    _ends_quietly_on_a_closed_output(monkeypatch, capsys, ["list", "--help"])


def test_a_long_output_to_a_closed_pipe_fails_inside_the_command_and_ends_quietly(monkeypatch, capsys):
    """Output larger than the buffer: the write fails inside the command, not at exit."""
    import robust_mix

    monkeypatch.setattr(robust_mix, "list_models", lambda pattern="*": ["mix"] * 20_000)
    _ends_quietly_on_a_closed_output(monkeypatch, capsys, ["list"])


def test_a_broken_pipe_that_is_not_the_output_is_still_an_error(monkeypatch, capsys):
    """Only the standard output's reader going away is quiet: a BrokenPipeError from elsewhere (a worker's pipe)
    is reported as the file error it is."""
    import robust_mix

    def broken(pattern="*"):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(robust_mix, "list_models", broken)
    assert main(["list"]) == 1
    assert "error: [Errno 32] Broken pipe" in capsys.readouterr().err


def test_version_is_the_package_version(capsys):
    """``robust-mix --version`` prints robust_mix.__version__, the version setup.cfg gives the installed metadata
    (tests/test_wheel.py checks the installed one)."""
    import configparser
    from pathlib import Path

    import robust_mix

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"robust-mix {robust_mix.__version__}"
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    # one place for the number: a literal here would drift from robust_mix/version.py
    assert setup["metadata"]["version"] == "attr: robust_mix.version.__version__"


def test_a_command_started_with_its_output_closed_runs(monkeypatch, capsys):
    """``robust-mix list >&-``: Python has no sys.stdout (None) and print writes nothing; flushing the output at the
    end must not turn that into an AttributeError."""
    import sys

    monkeypatch.setattr(sys, "stdout", None)
    assert main(["list"]) == 0
    assert main(["--version"]) == 0
    assert "Error" not in capsys.readouterr().err


def test_a_command_whose_output_closes_says_how_to_resume(monkeypatch, capsys):
    """A command with a resume line (benchmark, sweep, train ...) says it on stderr when its reader goes away, as
    after Ctrl-C; with stderr the same closed pipe (``|& head -1``) it still ends quietly with 141."""
    import io
    import os
    import sys

    from robust_mix import cli

    main(["list", "nothing-*"])  # imports the command modules
    arguments, run, help_text, _ = cli._COMMANDS["list"]
    monkeypatch.setitem(cli._COMMANDS, "list", (arguments, run, help_text, "rerun with {pattern}"))
    _ends_quietly_on_a_closed_output(monkeypatch, capsys, ["list", "fmnist-*"],
                                     expected_err="output closed: rerun with fmnist-*")
    read, write = os.pipe()
    os.close(read)
    err = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write, "w")), encoding="utf-8", line_buffering=True)
    monkeypatch.setattr(sys, "stderr", err)
    try:
        _ends_quietly_on_a_closed_output(monkeypatch, capsys, ["list", "fmnist-*"])
        err.write("more\n")  # the interpreter's flush at exit would fail (status 120) without a word
    finally:
        monkeypatch.setattr(sys, "stderr", sys.__stderr__)
        err.close()
