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


def test_demo_with_other_settings_keeps_its_own_state(tmp_path, capsys, monkeypatch):
    """``make demo DEMO_EXAMPLES=5`` after a default run: a state per setting, not a refusal."""
    from robust_mix.cli import demo

    monkeypatch.setattr(demo, "DEMO_ROWS", [("standard base", "fmnist-standard", {})])
    out = tmp_path / "demo"
    for n in (2, 3, 2):
        assert main(["demo", "--n-examples", str(n), "--attack", "apgd-ce", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "attack: APGD-CE (100 iter), partial:" in printed and "2 of the leaderboard's 10,000" in printed
    states = sorted(p.name for p in (out / "fmnist-standard" / "state").iterdir())
    assert states == ["n2_apgd-ce_b100", "n3_apgd-ce_b100"]
    assert '"resumed_chunks": 1' in (out / "fmnist-standard" / "report.json").read_text()  # the third run resumed
