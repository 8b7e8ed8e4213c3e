"""The command line: list and info."""
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
