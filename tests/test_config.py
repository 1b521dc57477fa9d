import re
from pathlib import Path

import pytest
import yaml

from rlhf_utils import cli
from rlhf_utils.config import (
    Config,
    ConfigError,
    diff_from_paper,
    list_presets,
    load_config,
    parse_override,
    preset_comments,
    preset_path,
)

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


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            yield from _leaves(value, dotted)
        else:
            yield dotted, value


def _all_fields_have_defaults(cls, seen):
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, \
            f"{cls.__name__}.{f.name} has no default"
        seen.append(f"{cls.__name__}.{f.name}")
        if dataclasses.is_dataclass(hints[f.name]):
            _all_fields_have_defaults(hints[f.name], seen)


def test_dataclass_defaults_are_the_paper_preset():
    seen = []
    _all_fields_have_defaults(Config, seen)
    assert len(seen) > 90 and "TinyModelConfig.hidden_size" in seen and "DPOSettings.beta" in seen
    paper, defaults = load_config("paper").to_dict(), Config().to_dict()
    for key in ("name", "description"):
        paper.pop(key), defaults.pop(key)
    assert repr(paper) == repr(defaults), "same values and types (1.0 is not 1)"
    assert diff_from_paper(load_config("paper")) == []


def test_preset_missing_keys_loads(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("online:\n  iterations: 1   # one is enough here\nsft:\n  epochs: 2\n")
    cfg = load_config(path, {"world.n_eval_prompts": 8})
    assert cfg.name == "short" and cfg.online.iterations == 1 and cfg.sft.epochs == 2.0
    assert isinstance(cfg.sft.epochs, float)
    assert cfg.online.k == Config().online.k and cfg.dpo == Config().dpo, "the rest are the paper defaults"
    assert cfg.world.n_eval_prompts == 8, "an override may set a key the file leaves out"
    assert [k for k, _, _ in diff_from_paper(cfg)] == ["world.n_eval_prompts", "sft.epochs", "online.iterations"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing changed\n")
    assert diff_from_paper(load_config(empty)) == []


@pytest.mark.parametrize(
    "text, key",
    [
        ("sft:\n  learning_rat: 1.0e-3\n", "sft.learning_rat"),
        ("models:\n  lora:\n    rank: 4\n", "models.lora.rank"),
        ("nosection:\n  x: 1\n", "nosection"),
        ("online:\n  k: eight\n", "online.k"),
        ("sft:\n  packing: 1\n", "sft.packing"),
        ("dpo: 5\n", "dpo"),
        ("online:\n  k: 1\n", "online.k"),
    ],
)
def test_bad_key_in_preset_file_names_the_key(text, key, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(path)


def test_presets_list_only_their_changes_each_with_a_comment():
    defaults = dict(_leaves(Config().to_dict()))
    for name in list_presets():
        written = dict(_leaves(yaml.safe_load(preset_path(name).read_text())))
        same = [k for k, v in written.items() if k not in ("name", "description") and defaults[k] == v]
        assert not same, f"{name} repeats paper defaults: {same}"
        comments = preset_comments(name)
        assert not [k for k, _, _ in diff_from_paper(load_config(name)) if k not in comments], f"{name}: say why"
    assert len(preset_path("paper").read_text().splitlines()) < 20
    assert set(yaml.safe_load(preset_path("paper").read_text())) == {"name", "description"}


def test_diff_from_paper_tiny():
    diff = {key: (paper, ours) for key, paper, ours in diff_from_paper(load_config("tiny"))}
    assert diff["sft.learning_rate"] == (2e-5, 2e-3)
    assert diff["online.max_new_tokens"] == (2048, 16)
    assert diff["models.policy"] == ("meta-llama/Meta-Llama-3-8B", "tiny")
    for unchanged in ("online.iterations", "online.k", "online.selection", "dpo.beta", "name", "description",
                      "world.n_sft_prompts", "models.tiny.hidden_size"):
        assert unchanged not in diff
    assert dict((k, (p, o)) for k, p, o in diff_from_paper(load_config("colab_t4")))["online.k"] == (8, 4)
    overridden = {k for k, _, _ in diff_from_paper(load_config("tiny", {"online.iterations": 2}))}
    assert "online.iterations" in overridden


def test_preset_comments_reads_key_and_block_comments(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "# header\nname: c\ndescription: 'has # inside'\nsft:            # block why\n"
        "  learning_rate: 1.0e-3  # own why\n  epochs: 2\nmodels:\n  lora:\n    r: 4 # lora why\n"
    )
    assert preset_comments(path) == {
        "sft": "block why", "sft.learning_rate": "own why", "sft.epochs": "block why", "models.lora.r": "lora why",
    }
    assert preset_comments("tiny")["online.backend"].startswith("transformers generate")


def test_cli_config_diff(capsys):
    assert cli.main(["config", "--preset", "tiny", "--diff"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(diff_from_paper(load_config("tiny")))
    assert any(line.startswith("sft.learning_rate: 2e-05 -> 0.002  # ") for line in lines)
    assert "runtime.device: auto -> cpu  # CI runs on a 2-core CPU" in lines
    assert any(line.startswith("models.lora.target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,"
                               " down_proj] -> [q_proj, k_proj, v_proj, o_proj]  # ") for line in lines)
    assert all(re.match(r"^[a-z_.]+: .+ -> .+", line) for line in lines)
    assert not any(line.split(":")[0] in ("name", "description", "online.iterations") for line in lines)
    assert cli.main(["config", "--preset", "paper", "--diff"]) == 0
    assert capsys.readouterr().out == ""
    assert cli.main(["config", "--preset", "paper", "--diff", "--set", "dpo.beta=0.05"]) == 0
    assert capsys.readouterr().out == "dpo.beta: 0.1 -> 0.05\n"


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


def test_pm_pair_orders_is_checked():
    with pytest.raises(ConfigError, match="preference_model.pair_orders: must be random or both"):
        load_config("tiny", {"preference_model.pair_orders": "alternate"})
    assert load_config("paper").preference_model.pair_orders == "random"  # the paper's choice
