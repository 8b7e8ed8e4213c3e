"""Files and names robust_mix reads that someone else may have written or chosen (a report, a sweep, a config, a run
folder's results, a weight file, a Hub revision, a path): each is refused, when it cannot be trusted, with a clear
error naming it and what to do, never a traceback from deep inside ``json``, ``pathlib`` or the Hub cache, never a
value read silently from a file that says two things or holds numbers of another kind, and never a file read from
outside the place named."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from robust_mix.config import ModelConfig, WeightsConfig
from robust_mix.convert import load_weights
from robust_mix.hub import CONFIG_NAME, fetch_file
from robust_mix.leaderboard.inputs import collect
from robust_mix.loading import parse_model_name
from robust_mix.reference import Reference
from robust_mix.results import BenchmarkResult
from robust_mix.sweep import read_sweep
from robust_mix.train.config import Schedule, load_recipe
from robust_mix.train.run_dir import RunDir, RunFileError
from robust_mix.validate import InvalidInputError, MalformedJSONError, parse_json

#: JSON text json.loads fails on deep inside Python, or reads silently one way of two.
MALFORMED = {
    "nested": "[" * 100_000,
    "nested objects": '{"a": ' * 50_000 + "1" + "}" * 50_000,
    "long integer": '{"n_examples": ' + "7" * 5000 + "}",
    "key twice": '{"name": "one", "name": "two"}',
}
#: What each kind of text is said to be.
REASON = {"nested": "nested too deeply", "nested objects": "nested too deeply", "long integer": "number too long",
          "key twice": "key 'name' appears twice"}


@pytest.mark.parametrize("kind", MALFORMED)
def test_parse_json_refuses_what_json_loads_fails_on_or_reads_one_way_of_two(kind):
    with pytest.raises(MalformedJSONError, match=REASON[kind]) as caught:
        parse_json(MALFORMED[kind])
    assert isinstance(caught.value, json.JSONDecodeError) and isinstance(caught.value, ValueError)
    assert parse_json('{"a": [1, {"b": 2.5}], "c": null}') == {"a": [1, {"b": 2.5}], "c": None}


READERS = {
    "model config": ModelConfig.load,
    "benchmark report": BenchmarkResult.from_json,
    "sweep": read_sweep,
    "reference": Reference.load,
    "recipe": lambda path: load_recipe(Schedule, path),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", MALFORMED)
def test_every_json_file_reader_names_the_file_it_cannot_trust(tmp_path, reader, kind):
    path = tmp_path / "given.json"
    path.write_text(MALFORMED[kind])
    with pytest.raises(ValueError, match=rf"given\.json is not valid JSON \(.*{REASON[kind]}.*\).*; "):
        READERS[reader](path)


@pytest.mark.parametrize("kind", MALFORMED)
def test_the_leaderboard_lists_such_a_file_as_rejected_and_reads_the_others(tmp_path, kind):
    (tmp_path / "report.json").write_text(MALFORMED[kind])
    inputs = collect([tmp_path])
    assert [r.path.name for r in inputs.rejected] == ["report.json"]
    assert REASON[kind] in inputs.rejected[0].reason


def test_an_override_value_json_cannot_read_is_kept_as_text():
    """``name,key=value`` reads the value as JSON when it parses: one nested too deeply is text, not a crash."""
    assert parse_model_name("fmnist-robust,alpha=" + "[" * 100_000).overrides == {"alpha": "[" * 100_000}


@pytest.mark.parametrize("text, why", [("{\"alpha\": 0.5", "not valid JSON"), ("[0.5]", "not the object"),
                                       ('{"alpha": 1, "alpha": 2}', "appears twice")])
def test_a_damaged_result_file_of_a_finished_run_is_named_with_what_to_do(tmp_path, text, why):
    """A finished calibration started again reads its result file back (nuts.json, policy.json): a damaged one
    was a bare JSONDecodeError traceback, or returned as the result."""
    run = RunDir(tmp_path / "run", Schedule(epochs=1, batch_size=4))
    try:
        (run.path / "nuts.json").write_text(text)
        with pytest.raises(RunFileError, match=rf"nuts\.json .*{why}.*move it away and rerun"):
            run.read_json("nuts.json")
        (run.path / "nuts.json").write_text('{"alpha": 0.5}')
        assert run.read_json("nuts.json") == {"alpha": 0.5}
    finally:
        run.close()


# -- tensors of another kind ------------------------------------------------------------------------------------
def _linear_bn_state(**replaced):
    state = {"0.weight": torch.full((2, 3), 0.25), "0.bias": torch.zeros(2), "1.weight": torch.ones(2),
             "1.bias": torch.zeros(2), "1.running_mean": torch.zeros(2), "1.running_var": torch.ones(2),
             "1.num_batches_tracked": torch.tensor(3)}
    return {**state, **replaced}


@pytest.mark.parametrize("fmt", [None, "robustbench"])
@pytest.mark.parametrize("key, value, kinds", [
    ("0.weight", torch.ones(2, 3, dtype=torch.int64), r"0\.weight \(int64, the model's is float32\)"),
    ("0.weight", torch.ones(2, 3, dtype=torch.bool), r"0\.weight \(bool, the model's is float32\)"),
    ("1.num_batches_tracked", torch.tensor(2.5), r"1\.num_batches_tracked \(float32, the model's is int64\)"),
])
def test_weights_of_another_kind_are_refused_not_cast(tmp_path, fmt, key, value, kinds):
    """A weight file (WeightsConfig: a local file, a Hub or RobustBench checkpoint) holding integers or booleans
    for floating-point weights, or a fraction for an integer count, was cast silently by load_state_dict."""
    path = tmp_path / "weights.safetensors"
    save_file(_linear_bn_state(**{key: value}), str(path))
    module = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(ValueError, match=rf"weights\.safetensors.* another kind .*{kinds}.*fetch the right file"):
        load_weights(module, WeightsConfig(file=str(path), format=fmt))
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())  # nothing was loaded


def test_weights_of_another_floating_point_precision_are_loaded(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(_linear_bn_state(**{"0.weight": torch.full((2, 3), 0.25, dtype=torch.float64)}), str(path))
    module = load_weights(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), WeightsConfig(file=str(path)))
    assert module[0].weight.dtype == torch.float32 and torch.equal(module[0].weight, torch.full((2, 3), 0.25))


# -- names that become paths --------------------------------------------------------------------------------------
@pytest.mark.parametrize("package", ["../../../../etc/hostname", "/etc/hostname", "zoo/weights/../../../x",
                                     "zoo\\..\\..\\x", "~/x.safetensors", "C:/x.safetensors", ""])
def test_a_package_weights_path_reads_nothing_outside_the_package(tmp_path, package):
    """WeightsConfig(package=...) names a file robust_mix ships; a config .json from elsewhere naming
    '../../../../etc/hostname' or an absolute path read that file under the package's name."""
    path = tmp_path / "entry.json"
    data = ModelConfig(name="mine", standard="timm/resnet18", robust="timm/resnet18", alpha=0.5).to_dict()
    path.write_text(json.dumps({**data, "weights": {"package": package}}))
    with pytest.raises(ValueError, match=rf"entry\.json: WeightsConfig\.package must be the path of a file shipped "
                                         rf"inside the robust_mix package.*use WeightsConfig\(file=PATH\)"):
        ModelConfig.load(path)
    assert WeightsConfig(package="zoo/weights/fmnist-robust.safetensors").package.startswith("zoo/")


@pytest.mark.parametrize("revision", ["../../evil", "/etc", "main/../../x", "v1 .0", "a\x00b", "main/"])
def test_a_hub_revision_that_names_no_git_ref_is_refused_before_the_cache_is_read(tmp_path, revision):
    """The Hub cache reads refs/<revision>: '../../evil' read a file outside it, then failed deep inside
    huggingface_hub ('Invalid pointer path')."""
    (tmp_path / "evil").write_text("0" * 40)
    (tmp_path / "models--org--name" / "refs").mkdir(parents=True)
    where = dict(cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(InvalidInputError, match=r"is not a revision: give a branch, tag or commit"):
        fetch_file(f"hf-hub:org/name@{revision}", CONFIG_NAME, **where)
    with pytest.raises(InvalidInputError, match=r"revision .* is not a revision"):
        fetch_file("hf-hub:org/name", CONFIG_NAME, revision=revision, **where)
    with pytest.raises(InvalidInputError, match=r"WeightsConfig\.revision .* is not a revision"):
        WeightsConfig(hub="org/name", revision=revision)
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):  # a git ref name is looked up
        fetch_file("hf-hub:org/name@refs/pr/1", CONFIG_NAME, **where)


def test_a_name_longer_than_any_file_name_is_an_unknown_model_not_an_os_error():
    """A NAME is looked up as a folder or .json file first: one of 5000 characters failed there with
    OSError 'File name too long' from pathlib."""
    for name in ("x" * 5000, "x" * 300 + ".json"):
        with pytest.raises(KeyError, match="unknown model"):
            parse_model_name(name)


@pytest.mark.parametrize("call", [
    lambda long: fetch_file(f"local-dir:runs/{long}", CONFIG_NAME),
    lambda long: BenchmarkResult.from_json(f"runs/{long}/report.json"),
    lambda long: read_sweep(f"{long}/sweep.json"),
    lambda long: RunDir(f"runs/{long}", Schedule(epochs=1, batch_size=4)),
])
def test_a_path_with_a_part_longer_than_a_file_name_is_named_with_what_to_do(tmp_path, monkeypatch, call):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match=r"has a part of 300 bytes .*longer than the 255 bytes a file or folder "
                                                r"name may have; give .* with shorter names"):
        call("y" * 300)


# -- configs read back: every field checked on reading ------------------------------------------------------------
def _config_data(**changes):
    data = ModelConfig(name="mine", standard="timm/resnet18", robust="timm/resnet18", alpha=0.5, eps=0.1,
                       num_classes=10).to_dict()
    return {**data, **changes}


#: A field of a saved config edited to a value no config holds -> what the error says of it.
BAD_CONFIG_FIELDS = {
    "eps NaN": (dict(eps=float("nan")), r"eps must be a finite number, got nan"),
    "alpha as text": (dict(alpha="0.5"), r"alpha must be a number or None, got '0\.5'"),
    "classes as text": (dict(num_classes="10"), r"num_classes must be an integer or None, got '10'"),
    "alpha out of range": (dict(alpha=1.5), r"alpha"),
    "negative temperature": (dict(std_scale=-1.0), r"std_scale must be a finite number > 0, got -1\.0"),
    "labels disagree": (dict(labels=["a", "b"]), r"class counts"),
}


@pytest.mark.parametrize("case", BAD_CONFIG_FIELDS)
def test_a_config_file_is_checked_field_by_field_when_read(tmp_path, case):
    """ModelConfig.load took eps NaN, alpha "0.5" or num_classes "10" as read; only building the model refused them,
    and ``submit``/``card``, which read the config without building, used them."""
    changes, match = BAD_CONFIG_FIELDS[case]
    path = tmp_path / "entry.json"
    path.write_text(json.dumps(_config_data()))
    assert ModelConfig.load(path).eps == 0.1  # the unedited file is fine
    path.write_text(json.dumps(_config_data(**changes)))
    with pytest.raises(InvalidInputError, match=rf"entry\.json: .*{match}.*write it again with ModelConfig\.save"):
        ModelConfig.load(path)


@pytest.mark.parametrize("case", BAD_CONFIG_FIELDS)
def test_a_saved_model_s_config_json_is_checked_field_by_field_when_read(tmp_path, case):
    from robust_mix.hub import FORMAT_VERSION, read_config

    changes, match = BAD_CONFIG_FIELDS[case]
    path = tmp_path / CONFIG_NAME
    path.write_text(json.dumps({"format_version": FORMAT_VERSION, **_config_data(**changes)}))
    with pytest.raises(InvalidInputError, match=rf"{CONFIG_NAME}: .*{match}.*save the model again"):
        read_config(path)


def test_the_config_a_name_refers_to_is_checked_with_its_overrides(tmp_path):
    """``model_config_of`` (what ``submit`` and ``card`` read a NAME's config with) returned configs with
    alpha=2 or a NaN eps unchecked."""
    from robust_mix.loading import model_config_of

    path = tmp_path / "entry.json"
    path.write_text(json.dumps(_config_data()))
    assert model_config_of(str(path)).alpha == 0.5
    with pytest.raises(InvalidInputError, match=r"alpha"):
        model_config_of(f"{path},alpha=2")
    with pytest.raises(InvalidInputError, match=r"eps must be a finite number > 0, got -1"):
        model_config_of("fmnist-robust,eps=-1")


@pytest.mark.parametrize("changes, match", [
    ({"epochs": -1}, r"epochs must be a positive integer \(>= 1\), got -1"),
    ({"lr": float("nan")}, r"lr must be a finite number, got nan"),
    ({"seed": "0"}, r"seed must be an integer"),
    ({"batch_size": True}, r"batch_size must be an integer"),
    ({"warmup": 1}, r"unknown Schedule field\(s\) \['warmup'\]"),
])
def test_a_recipe_file_is_refused_naming_the_file_and_the_field(tmp_path, changes, match):
    """load_recipe refused a bad field without naming the file it came from (or, for a list, with a bare
    TypeError)."""
    from robust_mix.train.config import save_recipe

    path = tmp_path / "recipe.json"
    save_recipe(Schedule(epochs=1, batch_size=4), path)
    assert load_recipe(Schedule, path) == Schedule(epochs=1, batch_size=4)  # what save_recipe wrote is read back
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    with pytest.raises(InvalidInputError, match=rf"recipe\.json: .*{match}.*save_recipe"):
        load_recipe(Schedule, path)
    path.write_text("[1, 2]")
    with pytest.raises(InvalidInputError, match=r"recipe\.json: expected a JSON object for Schedule, got list"):
        load_recipe(Schedule, path)
