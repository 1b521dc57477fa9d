import re
from pathlib import Path

import pytest
import yaml

from rlhf_utils import cli
from rlhf_utils.config import ConfigError, list_presets, load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]


def test_presets_exist_and_load():
    assert {"tiny", "colab_t4", "single_gpu", "paper"} <= set(list_presets())
    for name in list_presets():
        assert load_config(name).name == name


def test_paper_preset_carries_paper_values():
    cfg = load_config("paper")
    assert cfg.sft.learning_rate == 2e-5
    assert (cfg.reward_model.learning_rate, cfg.reward_model.global_batch_size) == (2e-6, 512)
    assert (cfg.dpo.learning_rate, cfg.dpo.epochs, cfg.dpo.global_batch_size, cfg.dpo.beta) == (5e-7, 2, 128, 0.1)
    o = cfg.online
    assert (o.k, o.temperature, o.selection, o.iterations, o.reference) == (8, 1.0, "max_min", 3, "sft")


def test_overrides_are_typed():
    cfg = load_config("tiny", dict([parse_override("sft.learning_rate=1e-4"), parse_override("models.lora.r=4")]))
    assert cfg.sft.learning_rate == 1e-4 and cfg.models.lora.r == 4
    assert parse_override("online.selection=max_random") == ("online.selection", "max_random")
    assert parse_override("models.lora.enabled=true") == ("models.lora.enabled", True)


@pytest.mark.parametrize(
    "override, key",
    [
        ("sft.learning_rate=-0.1", "sft.learning_rate"),
        ("online.k=1", "online.k"),
        ("online.iterations=0", "online.iterations"),
        ("online.k=two", "online.k"),
        ("sft.no_such_knob=1", "sft.no_such_knob"),
        ("nosection.x=1", "nosection.x"),
        ("online.selection=best", "online.selection"),
        ("online.top_p=1.5", "online.top_p"),
        ("online.length_penalty=-1", "online.length_penalty"),
        ("dpo.global_batch_size=33", "dpo.global_batch_size"),
        ("models.lora.enabled=yes please", "models.lora.enabled"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config("tiny", dict([parse_override(override)]))


def test_contradictory_options_rejected():
    with pytest.raises(ConfigError, match="online.accumulate"):
        load_config("tiny", {"online.accumulate": True, "online.reference": "previous"})


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config("nope")


@pytest.mark.parametrize(
    "argv, key",
    [
        (["run", "--preset", "nope"], "preset"),
        (["run", "--set", "online.k=1"], "online.k"),
        (["run", "--set", "sft.learning_rate=-1"], "sft.learning_rate"),
        (["run", "--set", "online.iterations=0"], "online.iterations"),
        (["run", "--set", "sft.bogus=1"], "sft.bogus"),
        (["run", "--set", "novalue"], "novalue"),
    ],
)
def test_cli_bad_input_exits_with_one_line(argv, key, capsys, tmp_path):
    code = cli.main([*argv, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and key in err
    assert not (tmp_path / "run").exists(), "nothing may be written before validation passes"


def test_cli_config_prints_resolved_yaml(capsys):
    assert cli.main(["config", "--preset", "tiny", "--seed", "7", "--set", "dpo.beta=0.2"]) == 0
    tree = yaml.safe_load(capsys.readouterr().out)
    assert tree["runtime"]["seed"] == 7 and tree["dpo"]["beta"] == 0.2


def test_environment_yml_matches_pyproject():
    import tomllib

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    editable = next(p for p in pip if p.startswith("-e ."))
    extras = re.search(r"\[(.*)\]", editable).group(1).split(",")
    assert set(extras) <= set(project["optional-dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    torch_pin = re.search(r"TORCH_SPEC \?= (\S+)", makefile).group(1)
    assert torch_pin in pip, "environment.yml and the Makefile must pin the same CPU torch"
    assert "rlhf-workflow" in project["scripts"]
