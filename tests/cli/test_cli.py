"""CLI conventions: --version, shell completion, choices the parser checks, help on every
option, one meaning per short flag, and `cnnzoo config` (the resolved config as YAML)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

import cnnzoo
from cnnzoo.cli import options as cnnzoo_cli
from cnnzoo.config.bundled import bundled_configs
from cnnzoo.config.experiment import ExperimentConfig
from cnnzoo.utils.params import param_infos
from tests.helpers.common import CONFIGS, run_process, write


def commands() -> dict[str, Any]:
    """The click commands Typer builds (its own vendored click): "" is `cnnzoo` itself."""
    group = typer.main.get_command(cnnzoo_cli.app)
    assert len(group.commands) >= 10
    return {"": group, **group.commands}


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and result.out == f"cnnzoo {cnnzoo.__version__}\n"


def test_every_option_and_argument_has_help():
    missing = [f"{name or 'cnnzoo'} {param.name}" for name, command in commands().items()
               for param in command.params if not (getattr(param, "help", None) or "").strip()]
    assert missing == []


def test_a_short_flag_means_one_thing_in_every_command():
    meaning: dict[str, set[str]] = {}
    for command in commands().values():
        for param in command.params:
            if param.param_type_name == "option":
                longs = [o for o in param.opts if o.startswith("--")]
                for short in (o for o in param.opts if not o.startswith("--")):
                    meaning.setdefault(short, set()).update(longs)
    assert meaning, "no short flags found: the walk is broken"
    assert {short: longs for short, longs in meaning.items() if len(longs) != 1} == {}


def test_the_choices_are_the_ones_the_code_accepts():
    from cnnzoo.config.experiment import TTA_VIEWS
    from cnnzoo.layers.conv import IMPLS
    from cnnzoo.layers.freq import SHAPES
    from cnnzoo.layers.kernels import FIXED_KERNELS
    from cnnzoo.layers.padding import PADDING_MODES

    assert [m.value for m in cnnzoo_cli.PaddingMode] == list(PADDING_MODES)
    assert [m.value for m in cnnzoo_cli.TtaMode] == list(TTA_VIEWS)
    assert [m.value for m in cnnzoo_cli.ConvImpl] == list(IMPLS)
    assert sorted(m.value for m in cnnzoo_cli.FreqShape) == sorted(SHAPES)
    assert sorted(m.value for m in cnnzoo_cli.FixedKernel) == sorted(FIXED_KERNELS)


@pytest.mark.parametrize(("args", "option"), [
    (["eval", "RUN", "--split", "tests"], "--split"),
    (["filter", "IMG", "-o", "OUT", "--padding-mode", "mirror"], "--padding-mode"),
    (["filter", "IMG", "-o", "OUT", "--impl", "winograd"], "--impl"),
    (["filter", "IMG", "-o", "OUT", "--kernel", "sobel"], "--kernel"),
])
def test_a_wrong_choice_is_refused_by_the_parser(tmp_path, cli, args, option):
    args = [str(tmp_path / a) if a in ("RUN", "IMG", "OUT") else a for a in args]
    result = cli(*args)
    assert result.code == 2
    assert f"Invalid value for '{option}'" in result.err and result.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("command", "choices"), [
    ("eval", "test|val|train"),
    ("eval", "none|flip|shift|flip_shift"),
    ("filter", "zeros|reflect|replicate|circular|symmetric"),
    ("filter", "direct|fft|auto"),
])
def test_help_lists_the_choices(cli, command, choices):
    result = cli(command, "--help")
    assert result.code == 0 and choices in result.out


def test_completion_offers_bundled_config_names_and_yaml_files(tmp_path):
    write(tmp_path / "lenet-mine.yaml", "model: {layers: [fc: 10]}\n")
    (tmp_path / "notes.txt").write_text("")
    result = run_process(cwd=tmp_path, env={"_CNNZOO_COMPLETE": "complete_bash",
                                            "COMP_WORDS": "cnnzoo train --config len",
                                            "COMP_CWORD": "3"})
    assert result.code == 0, result.err
    assert result.out.split() == ["lenet5", "lenet-mine.yaml"]


def test_completion_lists_files_in_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cnnzoo_cli.complete_config("") == list(bundled_configs())
    write(tmp_path / "nets" / "a.yaml", "")
    write(tmp_path / "nets" / "b.txt", "")
    (tmp_path / "nets" / "deeper").mkdir()
    assert cnnzoo_cli.complete_config("nets/") == ["nets/a.yaml", "nets/deeper/"]
    assert cnnzoo_cli.complete_config("zzz") == []


def test_install_completion_is_offered(cli):
    assert "--install-completion" in cli("--help").out


# ---- cnnzoo config


def field_paths(cls: type, prefix: str = "") -> set[str]:
    """Every key of the experiment file, from the config dataclasses themselves."""
    paths = set()
    for info in param_infos(cls):
        path = f"{prefix}{info.name}"
        nested = dataclasses.is_dataclass(info.default)  # a section: all of its defaults
        paths |= field_paths(type(info.default), f"{path}.") if nested else {path}
    return paths


def yaml_paths(data: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in data.items():
        nested = isinstance(value, dict) and key != "model"
        paths |= yaml_paths(value, f"{prefix}{key}.") if nested else {f"{prefix}{key}"}
    return paths


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_prints_a_config_that_loads_back_equal(tmp_path, cli, path):
    result = cli("config", path.stem)
    assert result.code == 0, result.err
    original = cnnzoo.load_config(path.stem)
    dumped = write(tmp_path / "resolved.yaml", result.out)
    assert cnnzoo.load_config(dumped) == original
    assert cnnzoo.parse_config(result.out) == original
    # Every default filled in: each key the config classes define is written out.
    assert yaml_paths(yaml.safe_load(result.out)) == field_paths(ExperimentConfig) - {
        "versions"}


def test_config_applies_overrides_and_takes_a_path(tmp_path, cli):
    path = write(tmp_path / "net.yaml", "model: {layers: [input: {width: 4, height: 4, "
                 "depth: 1}, fc: 3]}\n")
    result = cli("config", path, "--set", "train.epochs=7", "--set", "train.optimizer=adam")
    assert result.code == 0, result.err
    data = yaml.safe_load(result.out)
    assert data["name"] == "net" and data["train"]["epochs"] == 7
    assert data["train"]["optimizer"]["name"] == "adam"
    assert data["train"]["divergence"] == {"enabled": True, "factor": 10.0, "steps": 20}


@pytest.mark.parametrize(("args", "expected"), [
    (["config", "lenet55"], "no config file or bundled config named 'lenet55'; did you mean"),
    (["config", "lenet5", "--set", "train.epochs=many"], "epochs must be an integer"),
    (["config", "lenet5", "--set", "train.epoch=3"], "did you mean 'epochs'"),
])
def test_config_refuses_bad_input_with_one_message(cli, args, expected):
    result = cli(*args)
    assert result.code == 2 and result.out == ""
    assert expected in result.err and result.err.count("\n") == 1, result.err


# ---- load_config and parse_config


def test_load_config_reads_a_file_whose_name_has_a_colon(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a:b.yaml", "model: {layers: [input: {width: 4, height: 4, depth: 1}, "
          "fc: 3]}\n")
    config = cnnzoo.load_config("a:b.yaml")
    assert config.name == "a:b" and config.model.layers[-1].units == 3


def test_load_config_given_yaml_text_points_to_parse_config():
    with pytest.raises(cnnzoo.ConfigError, match=r"looks like YAML text.*parse_config"):
        cnnzoo.load_config("model:\n  layers: [fc: 3]\n")


@pytest.mark.parametrize("name", ["a" * 300, "model: {layers: [fc: 3]}"])
def test_load_config_refuses_what_is_not_a_file_or_bundled_name(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cnnzoo.ConfigError, match="no config file"):
        cnnzoo.load_config(name)


def test_parse_config_reads_text_and_names_its_source():
    config = cnnzoo.parse_config("model: {layers: [input: {width: 4, height: 4, depth: 1}, "
                                 "fc: 3]}\n", ["train.epochs=2"])
    assert config.name == "experiment" and config.train.epochs == 2
    with pytest.raises(cnnzoo.ConfigError) as error:
        cnnzoo.parse_config("model: {layers: [cnov: 3]}\n", source="my-net.yaml")
    assert "my-net.yaml" in str(error.value) and "did you mean 'conv'" in str(error.value)
    with pytest.raises(cnnzoo.ConfigError, match="the file is empty"):
        cnnzoo.parse_config("")


def test_the_public_surface_is_documented():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in ("load_config", "parse_config", "build_model", "plan_experiment",
                 "register_layer"):
        assert name in cnnzoo.__all__ and f"cnnzoo.{name}" in readme, name
