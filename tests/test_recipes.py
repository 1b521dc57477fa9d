"""Data recipes: adapters on fixtures in each hub dataset's real schema, bad-row errors,
recipe validation, and every preset loading. Offline and a few seconds in all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest

from rlhf_utils import recipes
from rlhf_utils.config import ConfigError, list_presets, load_config
from rlhf_utils.recipes import ADAPTERS, RECIPE_DIR, build_split, load_recipe, load_source

FIXTURES = Path(__file__).parent / "fixtures"
MIXTURE = FIXTURES / "local_mixture.yaml"


def msg(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def source(dataset: str, adapter: str, **extra: Any) -> dict[str, Any]:
    return {"dataset": dataset, "split": "train", "adapter": adapter, **extra}


def roles(messages: list[dict[str, str]]) -> list[str]:
    return [m["role"] for m in messages]


# ------------------------------------------------------------------ adapters on fixtures


def test_rlhflow_sft_fixture() -> None:
    ds = load_source(source(str(FIXTURES / "rlhflow_sft.jsonl"), "rlhflow_sft"), seed=0)
    assert ds.column_names == ["messages"] and len(ds) == 4
    by_first = {row["messages"][0]["content"]: row["messages"] for row in ds}
    assert roles(by_first["You are a concise math tutor."]) == ["system", "user", "assistant"]
    assert roles(by_first["Name a prime number."]) == ["user", "assistant", "user", "assistant"]
    assert all(set(m) == {"role", "content"} for row in ds for m in row["messages"])


def test_rlhflow_sft_accepts_sharegpt_turns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "sg.jsonl", [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}])
    ds = load_source(source(path, "rlhflow_sft"), seed=0)
    assert ds[0]["messages"] == [msg("user", "hi"), msg("assistant", "hello")]


def test_preference_700k_fixture_splits_the_shared_prompt() -> None:
    ds = load_source(source(str(FIXTURES / "preference_700k.jsonl"), "preference_700k"), seed=0)
    assert ds.column_names == ["prompt", "chosen", "rejected"] and len(ds) == 4
    for row in ds:
        assert row["prompt"][-1]["role"] == "user"
        assert roles(row["chosen"]) == ["assistant"] and roles(row["rejected"]) == ["assistant"]
        assert row["chosen"] != row["rejected"]
    multi = next(r for r in ds if len(r["prompt"]) > 1)
    assert roles(multi["prompt"]) == ["user", "assistant", "user"]
    assert multi["chosen"][0]["content"].startswith("The Canary Islands")


def test_context_messages_fixture_keeps_multi_turn_history() -> None:
    ds = load_source(source(str(FIXTURES / "iterative_prompt.jsonl"), "context_messages"), seed=0)
    assert ds.column_names == ["prompt"] and len(ds) == 5
    assert all(row["prompt"][-1]["role"] == "user" for row in ds)
    assert sorted(len(row["prompt"]) for row in ds) == [1, 1, 1, 1, 3]


def test_alpaca_eval_fixture_json_array() -> None:
    ds = load_source({"dataset": str(FIXTURES / "alpaca_eval.json"), "split": "eval", "adapter": "alpaca_eval"}, seed=0)
    assert len(ds) == 3 and all(roles(row["prompt"]) == ["user"] for row in ds)


def test_alpaca_eval_from_csv(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("instruction,dataset\nSay hi.,x\nSay bye.,y\n")
    ds = load_source(source(str(tmp_path / "p.csv"), "alpaca_eval"), seed=0)
    assert sorted(row["prompt"][0]["content"] for row in ds) == ["Say bye.", "Say hi."]


@pytest.mark.parametrize(
    ("fixture", "adapter", "identity"),
    [
        ("rlhflow_sft.jsonl", "rlhflow_sft", "identity_sft"),
        ("preference_700k.jsonl", "preference_700k", "identity_preference"),
        ("iterative_prompt.jsonl", "context_messages", "identity_prompt"),
    ],
)
def test_identity_adapters_round_trip_parquet_and_save_to_disk(tmp_path: Path, fixture: str, adapter: str, identity: str) -> None:
    common = load_source(source(str(FIXTURES / fixture), adapter), seed=0)
    common.to_parquet(str(tmp_path / "x.parquet"))
    common.save_to_disk(str(tmp_path / "saved"))
    for path in (tmp_path / "x.parquet", tmp_path / "saved"):
        again = load_source(source(str(path), identity), seed=0)
        assert sorted(map(json.dumps, again.to_list())) == sorted(map(json.dumps, common.to_list()))


def test_columns_mapping_renames_before_the_adapter(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": [msg("user", "why?")]}])
    ds = load_source(source(path, "context_messages", columns={"context_messages": "question"}), seed=0)
    assert ds[0]["prompt"] == [msg("user", "why?")]
    with pytest.raises(ValueError, match="columns mapping names nope"):
        load_source(source(path, "context_messages", columns={"context_messages": "nope"}), seed=0)


def test_num_samples_is_a_seeded_subset() -> None:
    src = source(str(FIXTURES / "iterative_prompt.jsonl"), "context_messages", num_samples=3)
    a, b = load_source(src, seed=1), load_source(src, seed=1)
    assert len(a) == 3 and a.to_list() == b.to_list()
    others = {json.dumps(load_source(src, seed=s).to_list()) for s in range(6)}
    assert len(others) > 1  # the seed matters


def test_num_samples_above_the_row_count_keeps_all(capsys: pytest.CaptureFixture[str]) -> None:
    ds = load_source(source(str(FIXTURES / "iterative_prompt.jsonl"), "context_messages", num_samples=99), seed=0)
    assert len(ds) == 5 and "num_samples=99 but only 5" in capsys.readouterr().out


def test_hub_sources_go_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    rows = datasets.Dataset.from_json(str(FIXTURES / "iterative_prompt.jsonl"))

    def fake(*args: Any, **kwargs: Any) -> datasets.Dataset:
        calls.append((args, kwargs))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake)
    src = {"dataset": "RLHFlow/iterative-prompt-v1-iter1-20K", "split": "train", "adapter": "context_messages", "config": None}
    assert len(load_source(src, seed=0)) == 5
    # No token or remote-code flag is passed: the token comes from the environment only.
    assert calls == [(("RLHFlow/iterative-prompt-v1-iter1-20K", None), {"split": "train"})]


def hub_layout(tmp_path: Path, fixture: str = "iterative_prompt.jsonl", copies: int = 4) -> Path:
    """A folder laid out as a hub dataset repository (``data/train-*.jsonl``), as ``load_dataset``
    reads it, with the fixture's rows repeated (each copy made distinct) so there is a stream to sample."""
    rows = [json.loads(line) for line in (FIXTURES / fixture).read_text().splitlines()]
    repo = tmp_path / "hub_repo"
    (repo / "data").mkdir(parents=True)
    for shard in range(2):
        lines = []
        for c in range(copies):
            for r in rows:
                r = json.loads(json.dumps(r))
                r["context_messages"][-1]["content"] += f" (shard {shard}, copy {c})"
                lines.append(json.dumps(r))
        (repo / f"data/train-0000{shard}-of-00002.jsonl").write_text("\n".join(lines) + "\n")
    return repo


def test_hub_sources_with_num_samples_are_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subsampled hub dataset is streamed through a seeded shuffle buffer: only the rows kept
    travel; the same seed takes the same rows, another seed others."""
    repo = hub_layout(tmp_path)
    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(k) or real(*a, **k))
    src = {"dataset": str(repo), "split": "train", "adapter": "context_messages", "num_samples": 6}
    first, again, other = (load_source(src, seed) for seed in (0, 0, 1))
    assert calls and all(k.get("streaming") is True for k in calls)
    assert len(first) == 6 and first["prompt"] == again["prompt"] and first["prompt"] != other["prompt"]
    everything = load_source({k: v for k, v in src.items() if k != "num_samples"}, seed=0)
    assert len(everything) == 40 and calls[-1].get("streaming") is None, "no num_samples: the whole set, not streamed"
    assert {json.dumps(p) for p in first["prompt"]} <= {json.dumps(p) for p in everything["prompt"]}


def test_a_streamed_source_with_too_few_usable_rows_keeps_them_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = {"dataset": str(hub_layout(tmp_path, copies=1)), "split": "train", "adapter": "context_messages", "num_samples": 50}
    assert len(load_source(src, seed=0)) == 10
    assert "num_samples=50 but only 10 usable rows" in capsys.readouterr().out


# ------------------------------------------------------------------ build_split


def test_build_split_every_part_of_the_fixture_recipe() -> None:
    recipe = load_recipe(MIXTURE)
    assert len(build_split(recipe, "sft", seed=0)) == 4
    pref = build_split(recipe, "preference", seed=0)
    assert len(pref) == 3 and pref.column_names == ["prompt", "chosen", "rejected"]
    assert len(build_split(recipe, "eval_prompts", seed=0)) == 3
    assert [len(build_split(recipe, "iteration_prompts", seed=0, index=i)) for i in range(3)] == [2, 3, 5]


def test_build_split_concatenates_and_dedups_across_sources(capsys: pytest.CaptureFixture[str]) -> None:
    recipe = load_recipe(MIXTURE)
    recipe["eval_prompts"] = recipe["iteration_prompts"][:2]  # 2 + 3 rows of the same file
    ds = build_split(recipe, "eval_prompts", seed=0)
    assert len(ds) == len({json.dumps(r) for r in ds.to_list()}) <= 5
    if len(ds) < 5:
        assert "eval_prompts: dropped" in capsys.readouterr().out


def test_build_split_bad_part_or_index() -> None:
    recipe = load_recipe(MIXTURE)
    with pytest.raises(ConfigError, match="index 3 out of range"):
        build_split(recipe, "iteration_prompts", seed=0, index=3)
    with pytest.raises(ConfigError, match="out of range"):
        build_split(recipe, "iteration_prompts", seed=0)
    with pytest.raises(ConfigError, match="only for iteration_prompts"):
        build_split(recipe, "sft", seed=0, index=0)
    with pytest.raises(ConfigError, match="must be one of"):
        build_split(recipe, "dpo", seed=0)
    with pytest.raises(ConfigError, match="not a mixture"):
        build_split(load_recipe("toy_world"), "sft", seed=0)


# ------------------------------------------------------------------ bad rows


def test_missing_column_names_dataset_and_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt_text": "hi", "idx": 1}])
    with pytest.raises(ValueError, match=r"p\.jsonl: missing column 'context_messages' \(columns present: prompt_text, idx\)"):
        load_source(source(path, "context_messages"), seed=0)


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([msg("user", "")], r"row 1: field 'context_messages'\[0\]: empty content"),
        ([msg("user", "   ")], r"row 1: field 'context_messages'\[0\]: empty content"),
        ([msg("user", "hi"), msg("user", "again")], r"row 1: field 'context_messages'\[1\]: role 'user' out of order"),
        ([msg("assistant", "hi")], r"row 1: field 'context_messages'\[0\]: role 'assistant' out of order"),
        ([msg("user", "hi"), msg("assistant", "yo")], r"row 1: field 'context_messages': the last turn must be 'user', got 'assistant'"),
        ([msg("robot", "hi")], r"row 1: field 'context_messages'\[0\]: unknown role 'robot'"),
        ([], r"row 1: field 'context_messages': expected a non-empty list"),
    ],
)
def test_bad_prompt_rows(tmp_path: Path, messages: list[dict[str, Any]], error: str) -> None:
    rows = [{"context_messages": [msg("user", "fine")]}, {"context_messages": messages}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(ValueError, match=r"p\.jsonl: " + error):
        load_source(source(path, "context_messages"), seed=0)


def test_non_string_content(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [msg("user", 5), msg("assistant", 6)]}])
    with pytest.raises(ValueError, match=r"s\.jsonl: row 0: field 'conversations'\[0\]: content must be a string, got int"):
        load_source(source(path, "rlhflow_sft"), seed=0)


def test_sft_must_end_with_assistant(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [msg("system", "be nice"), msg("user", "hi")]}])
    with pytest.raises(ValueError, match=r"row 0: field 'conversations': the last turn must be 'assistant', got 'user'"):
        load_source(source(path, "rlhflow_sft"), seed=0)


def test_preference_without_shared_prompt(tmp_path: Path) -> None:
    row = {"chosen": [msg("user", "a"), msg("assistant", "b")], "rejected": [msg("user", "OTHER"), msg("assistant", "c")]}
    path = write_jsonl(tmp_path / "p.jsonl", [row])
    with pytest.raises(ValueError, match=r"p\.jsonl: row 0: fields 'chosen'/'rejected'.*no shared prompt"):
        load_source(source(path, "preference_700k"), seed=0)


def test_identical_chosen_and_rejected_are_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = [msg("user", "q"), msg("assistant", "same")]
    good = {"chosen": [msg("user", "q"), msg("assistant", "good")], "rejected": [msg("user", "q"), msg("assistant", "bad")]}
    path = write_jsonl(tmp_path / "p.jsonl", [good, {"chosen": same, "rejected": same}, {"chosen": same, "rejected": same}])
    ds = load_source(source(path, "preference_700k"), seed=0)
    assert len(ds) == 1 and ds[0]["chosen"][0]["content"] == "good"
    assert "p.jsonl: dropped 2 rows with identical chosen and rejected" in capsys.readouterr().out


def test_duplicate_rows_are_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"context_messages": [msg("user", t)]} for t in ("a", "b", "a", "a", "c")]
    ds = load_source(source(write_jsonl(tmp_path / "p.jsonl", rows), "context_messages"), seed=0)
    assert sorted(r["prompt"][0]["content"] for r in ds) == ["a", "b", "c"]
    assert "p.jsonl: dropped 2 duplicate rows" in capsys.readouterr().out


def test_drops_do_not_shrink_num_samples(tmp_path: Path) -> None:
    rows = [{"context_messages": [msg("user", "dup")]}] * 6 + [{"context_messages": [msg("user", str(i))]} for i in range(4)]
    ds = load_source(source(write_jsonl(tmp_path / "p.jsonl", rows), "context_messages", num_samples=4), seed=0)
    assert len(ds) == 4 and len({r["prompt"][0]["content"] for r in ds}) == 4


def test_invalid_rows_drop_skips_malformed_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"context_messages": [msg("user", "ok")]}, {"context_messages": [msg("user", "")]}, {"context_messages": [msg("bot", "x")]}]
    ds = load_source(source(write_jsonl(tmp_path / "p.jsonl", rows), "context_messages", invalid_rows="drop"), seed=0)
    assert ds.to_list() == [{"prompt": [msg("user", "ok")]}]
    assert "p.jsonl: dropped 2 rows with invalid messages" in capsys.readouterr().out


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl: the file is empty"):
        load_source(source(str(tmp_path / "empty.jsonl"), "context_messages"), seed=0)


def test_nonexistent_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: local dataset file does not exist"):
        load_source(source(str(tmp_path / "nope.jsonl"), "context_messages"), seed=0)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: mixture\nsft:\n  - {dataset: nope.jsonl, split: train, adapter: rlhflow_sft}\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: sft\[0\]\.dataset: local file .*nope\.jsonl does not exist"):
        load_recipe(recipe)


# ------------------------------------------------------------------ recipe validation


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("{dataset: a/b, split: train, adapter: magic}", r"sft\[0\]\.adapter: unknown adapter 'magic'"),
        ("{dataset: a/b, split: train, adapter: context_messages}", r"sft\[0\]\.adapter: 'context_messages' makes prompt data"),
        ("{dataset: a/b, split: train, adapter: rlhflow_sft, num_samples: 0}", r"sft\[0\]\.num_samples: must be a positive integer"),
        ("{dataset: a/b, split: train, adapter: rlhflow_sft, num_samples: true}", r"sft\[0\]\.num_samples: must be a positive integer"),
        ("{dataset: a/b, split: train, adapter: rlhflow_sft, num_samples: '5'}", r"sft\[0\]\.num_samples: must be a positive integer"),
        ("{dataset: a/b, adapter: rlhflow_sft}", r"sft\[0\]\.split: required"),
        ("{split: train, adapter: rlhflow_sft}", r"sft\[0\]\.dataset: required"),
        ("{dataset: a/b, split: train, adapter: rlhflow_sft, shuffle: true}", r"sft\[0\]: unknown key\(s\) shuffle"),
        ("{dataset: a/b, split: train, adapter: rlhflow_sft, columns: [a]}", r"sft\[0\]\.columns: must map"),
        ("{dataset: a/b, split: train, adapter: rlhflow_sft, invalid_rows: skip}", r"sft\[0\]\.invalid_rows: must be raise or drop"),
    ],
)
def test_bad_mixture_sources(tmp_path: Path, entry: str, error: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"kind: mixture\nsft:\n  - {entry}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: " + error):
        load_recipe(path)


def test_bad_recipe_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: mixture\nsft_data: []\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: unknown key\(s\) sft_data"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("kind: mixture\nsft: []\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: sft: expected a non-empty list"):
        load_recipe(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("- just a list\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: does not hold a mapping"):
        load_recipe(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_relative_paths_resolve_against_the_recipe_folder() -> None:
    recipe = load_recipe(MIXTURE)
    for src in recipe["iteration_prompts"]:
        assert Path(src["dataset"]) == FIXTURES / "iterative_prompt.jsonl"


REAL = ["rlhflow", "rlhflow_medium", "rlhflow_small"]


@pytest.mark.parametrize("name", REAL)
def test_real_recipes_validate_offline(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("load_recipe must not load data")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    recipe = load_recipe(name)
    assert recipe["kind"] == "mixture"
    assert [s["dataset"] for s in recipe["sft"]] == ["RLHFlow/RLHFlow-SFT-Dataset-ver2"]
    assert [s["dataset"] for s in recipe["preference"]] == ["hendrydong/preference_700K"]
    iters = [s["dataset"] for s in recipe["iteration_prompts"]]
    assert iters == [f"RLHFlow/iterative-prompt-v1-iter{t}-20K" for t in (1, 2, 3)]
    assert len(recipe["eval_prompts"]) == 1 and recipe["eval_prompts"][0]["dataset"] not in iters
    assert all(ADAPTERS[s["adapter"]] for part in recipes.PARTS for s in recipe[part])


def test_real_recipes_shrink_in_order() -> None:
    def sizes(name: str) -> list[float]:
        r = load_recipe(name)
        return [r[p][0].get("num_samples", float("inf")) for p in ("sft", "preference", "iteration_prompts")]

    small, medium, full = (sizes(n) for n in ("rlhflow_small", "rlhflow_medium", "rlhflow"))
    assert all(s < m < f for s, m, f in zip(small, medium, full))


# ------------------------------------------------------------------ presets


@pytest.mark.parametrize("preset", ["tiny", "paper", "colab_t4", "single_gpu"])
def test_presets_load_and_name_a_recipe(preset: str) -> None:
    assert preset in list_presets()
    cfg = load_config(preset)
    assert cfg.name == preset
    recipe = load_recipe(cfg.data.recipe)
    if recipe["kind"] == "mixture":
        assert cfg.online.iterations <= len(recipe["iteration_prompts"])
        assert (RECIPE_DIR / f"{cfg.data.recipe}.yaml").is_file()


def test_paper_preset_matches_the_paper() -> None:
    cfg = load_config("paper").to_dict()

    def pick(section: str, *keys: str) -> tuple[Any, ...]:
        return tuple(cfg[section][k] for k in keys)

    assert pick("models", "policy", "reward_model", "preference_model") == (
        "meta-llama/Meta-Llama-3-8B",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "meta-llama/Meta-Llama-3-8B-Instruct",
    )
    assert pick("sft", "learning_rate", "warmup_ratio", "global_batch_size", "max_length", "packing") == (
        2e-5, 0.05, 128, 8192, True,
    )
    assert pick("reward_model", "learning_rate", "warmup_ratio", "weight_decay", "global_batch_size", "max_length") == (
        2e-6, 0.03, 0.001, 512, 4096,
    )
    assert pick("preference_model", "learning_rate", "global_batch_size", "max_length") == (5e-6, 128, 3072)
    assert pick("dpo", "learning_rate", "epochs", "global_batch_size", "beta", "loss_type", "max_length", "max_prompt_length") == (
        5e-7, 2, 128, 0.1, "sigmoid", 2048, 1000,
    )
    assert pick("online", "iterations", "k", "temperature", "top_p", "max_new_tokens", "selection") == (
        3, 8, 1.0, 1.0, 2048, "max_min",
    )
    assert pick("online", "reference", "accumulate", "scorer", "length_penalty") == ("sft", False, "rm", 0.0)
    assert pick("runtime", "seed", "precision", "gradient_checkpointing") == (42, "bf16", True)
    assert cfg["models"]["lora"]["enabled"] is False and cfg["data"]["recipe"] == "rlhflow"


def test_colab_preset_fits_a_t4() -> None:
    cfg = load_config("colab_t4")
    assert cfg.models.lora.enabled and cfg.runtime.precision == "auto" and cfg.runtime.gradient_checkpointing
    assert cfg.dpo.max_prompt_length + cfg.online.max_new_tokens <= cfg.dpo.max_length
