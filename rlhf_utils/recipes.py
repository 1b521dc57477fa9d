"""Data recipes: YAML mixtures of hub (or local) datasets, mapped to one common format.

A recipe is a file in ``data_recipes/`` (in the spirit of alignment-handbook's
``dataset_mixture:`` blocks). A ``kind: mixture`` recipe names, for each stage, the
sources to read::

    kind: mixture
    sft:                      # list of sources, concatenated
      - {dataset: RLHFlow/RLHFlow-SFT-Dataset-ver2, split: train, adapter: rlhflow_sft, num_samples: 20000}
    preference:
      - {dataset: hendrydong/preference_700K, split: train, adapter: preference_700k}
    iteration_prompts:        # one source per online iteration (index 0 = iteration 1)
      - {dataset: RLHFlow/iterative-prompt-v1-iter1-20K, split: train, adapter: context_messages}
    eval_prompts:             # held-out prompts
      - {dataset: ./eval.json, split: train, adapter: alpaca_eval}
    benchmarks:               # the chat benchmarks' own questions (notebook 05's exports), read whole, in order
      alpaca_eval: {dataset: tatsu-lab/alpaca_eval, data_file: alpaca_eval.json, split: train, adapter: alpaca_eval_questions}
      mt_bench: {dataset: HuggingFaceH4/mt_bench_prompts, split: train, adapter: mt_bench_questions}

Source keys: ``dataset`` (hub id, or a local .jsonl/.json/.parquet/.csv file, a folder
written by ``Dataset.save_to_disk``, or a folder laid out as a hub dataset repository; relative
paths resolve against the recipe's folder), ``split``, ``adapter`` (see :data:`ADAPTERS`),
optional ``config`` (hub subset), ``data_file`` (one JSON/parquet/CSV file inside a hub dataset
repository, read with datasets' file builder: for repositories whose loading script datasets 4
no longer runs, such as AlpacaEval's), ``num_samples`` (first N after a seeded shuffle: a hub
dataset is then *streamed* through a seeded shuffle buffer, so only the rows kept and the
buffer travel, not the whole set), ``columns`` (``{expected: actual}``
renames, for data whose columns are named differently from what the adapter reads) and
``invalid_rows`` (``raise``, the default, or ``drop``: skip malformed rows with a printed count).

Every adapter returns TRL's standard conversational formats, the ones the whole repo uses:

* sft: ``messages`` = [system?] user, assistant, ..., assistant
* preference: ``prompt`` (messages ending with a user turn), ``chosen`` / ``rejected``
  (one assistant message each)
* prompt: ``prompt`` (messages ending with a user turn)
* benchmark: ``question_id`` (the benchmark's, or None), ``turns`` (the user turns, in order),
  ``category``

Usage::

    from rlhf_utils.recipes import build_split, load_recipe
    recipe = load_recipe("rlhflow_small")              # or a path to a .yaml file
    sft = build_split(recipe, "sft", seed=42)
    prompts_it1 = build_split(recipe, "iteration_prompts", seed=42, index=0)

Bad rows raise ``ValueError`` naming the dataset, the row and the field (unless the source
says ``invalid_rows: drop``); duplicate rows and
pairs whose chosen equals rejected are dropped with a printed count.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import yaml
from datasets import Dataset, Features, List, Value

from .config import ConfigError

RECIPE_DIR = Path(__file__).resolve().parents[1] / "data_recipes"

Message = dict[str, str]
ROLES = ("system", "user", "assistant")
PARTS = {"sft": "sft", "preference": "preference", "iteration_prompts": "prompt", "eval_prompts": "prompt"}
SOURCE_KEYS = {"dataset", "split", "adapter", "config", "data_file", "num_samples", "columns", "invalid_rows"}
# The benchmarks notebook 05 answers, each with the adapter that gives what its answer file needs.
BENCHMARKS = {"alpaca_eval": "alpaca_eval_questions", "mt_bench": "mt_bench_questions"}
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# Rows a streamed source draws from at a time (datasets' own shuffle buffer, after it shuffles the
# shards): large enough to mix well, small enough to download a few MB for a 2K-row sample.
STREAM_BUFFER = 10_000
# The internal column a row's drop reason travels in between adapting and filtering.
_DROP = "_drop_reason"

_MESSAGES = List({"role": Value("string"), "content": Value("string")})
FEATURES = {
    "sft": Features({"messages": _MESSAGES}),
    "preference": Features({"prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES}),
    "prompt": Features({"prompt": _MESSAGES}),
}


class RowError(ValueError):
    """A malformed row; :func:`_adapt` prefixes the dataset name and row index."""


# ------------------------------------------------------------------ message checks


def _messages(value: Any, field: str, role_map: dict[str, str] | None = None) -> list[Message]:
    """Normalise a list of turns to ``[{"role", "content"}]``; raise :class:`RowError` on bad turns.

    ``role_map`` also accepts ShareGPT turns (``from``/``value`` keys, ``human``/``gpt`` roles).
    """
    if not isinstance(value, list) or not value:
        raise RowError(f"field {field!r}: expected a non-empty list of messages, got {value!r}")
    out = []
    for i, turn in enumerate(value):
        where = f"field {field!r}[{i}]"
        if not isinstance(turn, dict):
            raise RowError(f"{where}: expected a mapping with role and content, got {turn!r}")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        role = (role_map or {}).get(role, role)
        if role not in ROLES:
            raise RowError(f"{where}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise RowError(f"{where}: content must be a string, got {type(content).__name__} {content!r}")
        if not content.strip():
            raise RowError(f"{where}: empty content")
        out.append({"role": role, "content": content})
    return out


def _check_order(msgs: list[Message], field: str, last: str) -> None:
    """Optional system turn, then user/assistant alternating from user, ending with ``last``."""
    body = msgs[1:] if msgs[0]["role"] == "system" else msgs
    if not body:
        raise RowError(f"field {field!r}: only a system message")
    for i, m in enumerate(body):
        expected = ("user", "assistant")[i % 2]
        if m["role"] != expected:
            pos = i + len(msgs) - len(body)
            raise RowError(f"field {field!r}[{pos}]: role {m['role']!r} out of order (expected {expected!r})")
    if body[-1]["role"] != last:
        raise RowError(f"field {field!r}: the last turn must be {last!r}, got {body[-1]['role']!r}")


def conversation(value: Any, field: str, role_map: dict[str, str] | None = None) -> list[Message]:
    """A full SFT conversation, ending with an assistant turn."""
    msgs = _messages(value, field, role_map)
    _check_order(msgs, field, last="assistant")
    return msgs


def prompt_messages(value: Any, field: str) -> list[Message]:
    """A prompt: a conversation so far, ending with a user turn."""
    msgs = _messages(value, field)
    _check_order(msgs, field, last="user")
    return msgs


def _one_reply(value: Any, field: str) -> list[Message]:
    msgs = _messages(value, field)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        raise RowError(f"field {field!r}: expected exactly one assistant message, got roles {[m['role'] for m in msgs]}")
    return msgs


# ---------------------------------------------------------------------- adapters

SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


def adapt_rlhflow_sft(row: dict[str, Any]) -> dict[str, Any]:
    """RLHFlow/RLHFlow-SFT-Dataset-ver2: ``conversations`` = [{content, role}], plus ``source``
    and ``conversation_id`` (ignored). Falls back to a ``messages`` column, and accepts
    ShareGPT turns (``from``/``value``, ``human``/``gpt``) as the axolotl sharegpt loader does."""
    field = "conversations" if "conversations" in row else "messages"
    return {"messages": conversation(row[field], field, SHAREGPT_ROLES)}


def adapt_identity_sft(row: dict[str, Any]) -> dict[str, Any]:
    """Data already in the common SFT format: ``messages``."""
    return {"messages": conversation(row["messages"], "messages")}


def split_pair(chosen: Any, rejected: Any) -> dict[str, Any]:
    """Split two full conversations sharing a prompt into ``prompt`` / ``chosen`` / ``rejected``."""
    c, r = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    if c[:-1] != r[:-1]:
        raise RowError("fields 'chosen'/'rejected': the conversations differ before their last turn (no shared prompt)")
    for field, msgs in (("chosen", c), ("rejected", r)):
        if msgs[-1]["role"] != "assistant":
            raise RowError(f"field {field!r}: must end with an assistant turn, ends with {msgs[-1]['role']!r}")
    if len(c) < 2:
        raise RowError("field 'chosen': no prompt before the response")
    prompt = c[:-1]
    _check_order(prompt, "chosen", last="user")
    return {"prompt": prompt, "chosen": c[-1:], "rejected": r[-1:]}


def adapt_preference_700k(row: dict[str, Any]) -> dict[str, Any]:
    """hendrydong/preference_700K: ``chosen`` / ``rejected`` are whole conversations
    [{content, role}] that share every turn but the last; ``chosen_score`` / ``rejected_score``
    are ignored. The shared turns become ``prompt``."""
    return split_pair(row["chosen"], row["rejected"])


def adapt_identity_preference(row: dict[str, Any]) -> dict[str, Any]:
    """Data already in the common preference format: ``prompt``, ``chosen``, ``rejected``."""
    return {
        "prompt": prompt_messages(row["prompt"], "prompt"),
        "chosen": _one_reply(row["chosen"], "chosen"),
        "rejected": _one_reply(row["rejected"], "rejected"),
    }


def adapt_context_messages(row: dict[str, Any]) -> dict[str, Any]:
    """RLHFlow/iterative-prompt-v1-iter{t}-20K: ``context_messages`` = [{content, role}],
    one user turn or a multi-turn history ending with the user turn to answer."""
    return {"prompt": prompt_messages(row["context_messages"], "context_messages")}


def adapt_alpaca_eval(row: dict[str, Any]) -> dict[str, Any]:
    """AlpacaEval-style prompts (``instruction``: str; ``output``/``generator``/``dataset`` ignored)."""
    return {"prompt": prompt_messages([{"role": "user", "content": row["instruction"]}], "instruction")}


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"field {field!r}: expected non-empty text, got {value!r}")
    return value


def adapt_alpaca_eval_questions(row: dict[str, Any]) -> dict[str, Any]:
    """tatsu-lab/alpaca_eval's ``alpaca_eval.json``: ``instruction`` (answered), ``dataset`` (its
    source set, kept as the category); ``output``/``generator`` (the reference answers) ignored."""
    return {"question_id": None, "turns": [_text(row["instruction"], "instruction")], "category": row.get("dataset") or ""}


def adapt_mt_bench_questions(row: dict[str, Any]) -> dict[str, Any]:
    """HuggingFaceH4/mt_bench_prompts: ``prompt`` (the user turns, two per question), ``prompt_id``
    (FastChat's question id), ``category``; ``reference`` (answers for the judge) ignored."""
    turns = row["prompt"]
    if not isinstance(turns, list) or not turns:
        raise RowError(f"field 'prompt': expected a list of user turns, got {turns!r}")
    if not isinstance(row["prompt_id"], int) or isinstance(row["prompt_id"], bool):
        raise RowError(f"field 'prompt_id': expected an integer question id, got {row['prompt_id']!r}")
    return {"question_id": row["prompt_id"], "turns": [_text(t, f"prompt[{i}]") for i, t in enumerate(turns)],
            "category": _text(row["category"], "category")}


def adapt_identity_prompt(row: dict[str, Any]) -> dict[str, Any]:
    """Data already in the common prompt format: ``prompt``."""
    return {"prompt": prompt_messages(row["prompt"], "prompt")}


@dataclass(frozen=True)
class Adapter:
    kind: str  # sft | preference | prompt
    fn: Callable[[dict[str, Any]], dict[str, Any]]
    columns: tuple[tuple[str, ...], ...]  # each entry: alternatives, one of which must be present


ADAPTERS: dict[str, Adapter] = {
    "rlhflow_sft": Adapter("sft", adapt_rlhflow_sft, (("conversations", "messages"),)),
    "identity_sft": Adapter("sft", adapt_identity_sft, (("messages",),)),
    "preference_700k": Adapter("preference", adapt_preference_700k, (("chosen",), ("rejected",))),
    "identity_preference": Adapter("preference", adapt_identity_preference, (("prompt",), ("chosen",), ("rejected",))),
    "context_messages": Adapter("prompt", adapt_context_messages, (("context_messages",),)),
    "alpaca_eval": Adapter("prompt", adapt_alpaca_eval, (("instruction",),)),
    "identity_prompt": Adapter("prompt", adapt_identity_prompt, (("prompt",),)),
    "alpaca_eval_questions": Adapter("benchmark", adapt_alpaca_eval_questions, (("instruction",),)),
    "mt_bench_questions": Adapter("benchmark", adapt_mt_bench_questions, (("prompt",), ("prompt_id",), ("category",))),
}


# ---------------------------------------------------------------------- recipes


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe name (``rlhflow``, a file in :data:`RECIPE_DIR`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"data.recipe: file {path} does not exist")
        return path.resolve()
    path = RECIPE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
        raise ConfigError(f"data.recipe: unknown recipe {str(name_or_path)!r} (choose from {known})")
    return path


def _is_local(dataset: str) -> bool:
    """Local paths carry a data-file suffix or an explicit path prefix; hub ids never do."""
    return Path(dataset).suffix in LOCAL_SUFFIXES or dataset.startswith(("/", "./", "../", "~"))


def _resolve(dataset: str, base: Path) -> str:
    if dataset.startswith("~"):
        return str(Path(dataset).expanduser())
    path = Path(dataset)
    if path.is_absolute():
        return dataset
    # A relative name is local when it looks like a path or exists next to the recipe.
    candidate = base / path
    if _is_local(dataset) or candidate.exists():
        return str(candidate.resolve())
    return dataset


def _validate_source(src: Any, where: str, kind: str, base: Path) -> dict[str, Any]:
    if not isinstance(src, dict):
        raise ConfigError(f"{where}: expected a mapping with dataset/split/adapter, got {src!r}")
    unknown = set(src) - SOURCE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (valid: {', '.join(sorted(SOURCE_KEYS))})")
    for key in ("dataset", "split", "adapter"):
        if not isinstance(src.get(key), str) or not src[key].strip():
            raise ConfigError(f"{where}.{key}: required, a non-empty string (got {src.get(key)!r})")
    adapter = ADAPTERS.get(src["adapter"])
    if adapter is None:
        raise ConfigError(f"{where}.adapter: unknown adapter {src['adapter']!r} (choose from {', '.join(ADAPTERS)})")
    if adapter.kind != kind:
        ok = ", ".join(n for n, a in ADAPTERS.items() if a.kind == kind)
        raise ConfigError(f"{where}.adapter: {src['adapter']!r} makes {adapter.kind} data, this part needs {kind} ({ok})")
    n = src.get("num_samples")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ConfigError(f"{where}.num_samples: must be a positive integer (got {n!r})")
    for key in ("config", "data_file"):
        if src.get(key) is not None and not isinstance(src[key], str):
            raise ConfigError(f"{where}.{key}: must be a string (got {src[key]!r})")
    if src.get("invalid_rows", "raise") not in ("raise", "drop"):
        raise ConfigError(f"{where}.invalid_rows: must be raise or drop (got {src['invalid_rows']!r})")
    cols = src.get("columns")
    if cols is not None and not (isinstance(cols, dict) and all(isinstance(x, str) for kv in cols.items() for x in kv)):
        raise ConfigError(f"{where}.columns: must map expected column names to this dataset's names (got {cols!r})")
    out = dict(src, dataset=_resolve(src["dataset"], base))
    if _is_local(out["dataset"]) and not Path(out["dataset"]).exists():
        raise ConfigError(f"{where}.dataset: local file {out['dataset']} does not exist")
    return out


def validate_mixture(recipe: dict[str, Any], name: str, base: Path) -> dict[str, Any]:
    """Check a ``kind: mixture`` recipe; return it with local paths resolved against ``base``."""
    unknown = set(recipe) - {"kind", "description", "benchmarks", *PARTS}
    if unknown:
        valid = ", ".join(["kind", "description", *PARTS, "benchmarks"])
        raise ConfigError(f"{name}: unknown key(s) {', '.join(sorted(unknown))} (valid: {valid})")
    if not any(part in recipe for part in PARTS):
        raise ConfigError(f"{name}: a mixture needs at least one of {', '.join(PARTS)}")
    out = dict(recipe)
    for part, kind in PARTS.items():
        if part not in recipe:
            continue
        sources = recipe[part]
        if not isinstance(sources, list) or not sources:
            raise ConfigError(f"{name}: {part}: expected a non-empty list of sources, got {sources!r}")
        out[part] = [_validate_source(s, f"{name}: {part}[{i}]", kind, base) for i, s in enumerate(sources)]
    if "benchmarks" in recipe:
        out["benchmarks"] = _validate_benchmarks(recipe["benchmarks"], f"{name}: benchmarks", base)
    return out


def _validate_benchmarks(block: Any, where: str, base: Path) -> dict[str, dict[str, Any]]:
    if not isinstance(block, dict) or not block:
        raise ConfigError(f"{where}: expected a mapping of benchmark names to sources, got {block!r}")
    out = {}
    for bench, src in block.items():
        if bench not in BENCHMARKS:
            raise ConfigError(f"{where}: unknown benchmark {bench!r} (choose from {', '.join(BENCHMARKS)})")
        out[bench] = _validate_source(src, f"{where}.{bench}", "benchmark", base)
        if out[bench]["adapter"] != BENCHMARKS[bench]:
            raise ConfigError(f"{where}.{bench}.adapter: must be {BENCHMARKS[bench]} (its answer file needs what it reads)")
        if "num_samples" in src:
            raise ConfigError(f"{where}.{bench}.num_samples: a benchmark is answered whole (its score needs every question)")
    return out


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """Read a recipe (name in ``data_recipes/`` or path); validate it when it is a mixture.

    Other kinds (``toy_world``) come back as the raw YAML mapping. Errors are
    :class:`~rlhf_utils.config.ConfigError` naming the file and the offending key.
    """
    path = recipe_path(name_or_path)
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"{path}: does not hold a mapping")
    if recipe.get("kind") == "mixture":
        recipe = validate_mixture(recipe, str(path), path.parent)
    return recipe


# ---------------------------------------------------------------------- loading


def _saved_to_disk(path: Path) -> bool:
    return any((path / marker).is_file() for marker in ("state.json", "dataset_dict.json"))


def is_hub_like(dataset: str) -> bool:
    """A hub id, or a local folder laid out as a hub dataset repository: both load with
    ``datasets.load_dataset`` (and can stream); local files and ``save_to_disk`` folders do not."""
    path = Path(dataset).expanduser()
    if path.is_dir():
        return not _saved_to_disk(path)
    return not _is_local(dataset) and not path.exists()


def read_source(dataset: str, split: str, config: str | None, data_file: str | None = None) -> Dataset:
    """Raw rows of one source: local file, local ``save_to_disk`` folder or hub dataset (or one
    ``data_file`` of a hub dataset repository, or of a local folder laid out as one)."""
    if data_file is not None:
        builder = LOCAL_SUFFIXES.get(Path(data_file).suffix)
        if builder is None:
            raise ValueError(f"{dataset}: data_file {data_file!r}: unsupported file type (use {', '.join(LOCAL_SUFFIXES)})")
        base = dataset if Path(dataset).expanduser().is_dir() else f"hf://datasets/{dataset}"
        return datasets.load_dataset(builder, data_files={split: f"{base}/{data_file}"}, split=split)
    if not is_hub_like(dataset):
        path = Path(dataset).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{dataset}: local dataset file does not exist")
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(f"{dataset}: no split {split!r} (splits: {', '.join(loaded)})")
                loaded = loaded[split]
            return loaded
        builder = LOCAL_SUFFIXES.get(path.suffix)
        if builder is None:
            raise ValueError(f"{dataset}: unsupported file type {path.suffix!r} (use {', '.join(LOCAL_SUFFIXES)})")
        if path.stat().st_size == 0:
            raise ValueError(f"{dataset}: the file is empty")
        # Dataset.from_* run the same packaged builders as load_dataset("json", ...) without
        # its hub round trip (a download-count ping), so local data never touches the network.
        # Local files have no split of their own: the recipe's split name is just a label.
        reader = {"json": Dataset.from_json, "parquet": Dataset.from_parquet, "csv": Dataset.from_csv}[builder]
        return reader(str(path), split=split)
    # Hub: the token, if any, comes from the environment (HF_TOKEN) through huggingface_hub;
    # it is never passed or logged here, and no remote code is ever run.
    return datasets.load_dataset(dataset, config, split=split)


def _stream(dataset: str, split: str, config: str | None, seed: int) -> datasets.IterableDataset:
    """A hub dataset as a stream, shuffled with ``seed`` (its shards, then a buffer of
    :data:`STREAM_BUFFER` rows); iterating it again yields the same rows in the same order."""
    stream = datasets.load_dataset(dataset, config, split=split, streaming=True)
    return stream.shuffle(seed=seed, buffer_size=STREAM_BUFFER)


def _take(stream: datasets.IterableDataset, n: int) -> Dataset:
    rows = list(itertools.islice(iter(stream), n))
    return Dataset.from_list(rows) if rows else Dataset.from_dict({c: [] for c in stream.column_names or []})


def _drop_reason(kind: str, row: dict[str, Any]) -> str:
    if kind == "preference" and row["chosen"] == row["rejected"]:
        return "identical chosen and rejected"
    return ""


def _adapt(
    ds: Dataset, adapter: Adapter, name: str, rows: Sequence[int] | None = None, invalid_rows: str = "raise"
) -> Dataset:
    """Map every row through the adapter; ``rows[i]`` is row i's index in the file (for errors).

    A malformed row raises, or with ``invalid_rows="drop"`` is flagged for :func:`_clean`.
    """
    present = set(ds.column_names)
    for alternatives in adapter.columns:
        if not present.intersection(alternatives):
            wanted = " or ".join(repr(c) for c in alternatives)
            raise ValueError(f"{name}: missing column {wanted} (columns present: {', '.join(ds.column_names) or 'none'})")

    def one(row: dict[str, Any], idx: int) -> dict[str, Any]:
        try:
            out = adapter.fn(row)
        except RowError as err:
            if invalid_rows == "raise":
                raise ValueError(f"{name}: row {idx if rows is None else int(rows[idx])}: {err}") from None
            return {**{col: [] for col in FEATURES[adapter.kind]}, _DROP: "invalid messages"}
        return {**out, _DROP: _drop_reason(adapter.kind, out)}

    features = FEATURES[adapter.kind].copy()
    features[_DROP] = Value("string")
    return ds.map(one, with_indices=True, remove_columns=ds.column_names, features=features, desc=f"adapt {name}")


def _clean(ds: Dataset) -> tuple[Dataset, dict[str, int]]:
    """Drop rows flagged by the adapter and exact duplicates (first copy kept); count each."""
    reasons = ds[_DROP] if _DROP in ds.column_names else [""] * len(ds)
    counts = {f"rows with {r}": reasons.count(r) for r in sorted(set(reasons) - {""})}
    cols = [c for c in ds.column_names if c != _DROP]
    seen: set[str] = set()
    keep, dupes, i = [], 0, 0
    # Column batches decode far faster than row-by-row access on large hub datasets.
    for batch in ds.select_columns(cols).iter(batch_size=10_000):
        for values in zip(*(batch[c] for c in cols)):
            if not reasons[i]:
                key = json.dumps(values, ensure_ascii=False)
                if key in seen:
                    dupes += 1
                else:
                    seen.add(key)
                    keep.append(i)
            i += 1
    if dupes:
        counts["duplicate rows"] = dupes
    out = ds.select(keep) if len(keep) < len(ds) else ds
    return (out.remove_columns(_DROP) if _DROP in out.column_names else out), counts


def _report(name: str, counts: dict[str, int]) -> None:
    for what, count in counts.items():
        print(f"{name}: dropped {count} {what}")


def drop_rows(ds: Dataset, name: str) -> Dataset:
    """Drop flagged and duplicate rows, printing ``{name}: dropped N ...`` for each kind."""
    out, counts = _clean(ds)
    _report(name, counts)
    return out


def load_source(source: dict[str, Any], seed: int) -> Dataset:
    """Load one recipe source, shuffle it (seeded), adapt it to the common format, clean it,
    and keep the first ``num_samples`` usable rows.

    ``source`` is one entry of a recipe part (see the module docstring). A hub dataset with
    ``num_samples`` is streamed: only the rows kept (and the shuffle buffer) are downloaded.
    Example::

        load_source({"dataset": "tests/fixtures/iterative_prompt.jsonl", "split": "train",
                     "adapter": "context_messages", "num_samples": 2}, seed=0)
    """
    name = source["dataset"]
    adapter = ADAPTERS.get(source["adapter"])
    if adapter is None:
        raise ConfigError(f"{name}: unknown adapter {source['adapter']!r} (choose from {', '.join(ADAPTERS)})")
    n = source.get("num_samples")
    renames = {actual: expected for expected, actual in (source.get("columns") or {}).items() if actual != expected}
    order, total = None, None
    if n is not None and is_hub_like(name) and source.get("data_file") is None:
        stream = _stream(name, source["split"], source.get("config"), seed)

        def window(size: int) -> Dataset:
            return _take(stream, size)
    else:
        ds = read_source(name, source["split"], source.get("config"), source.get("data_file"))
        # Shuffle the raw rows, then adapt only as many as num_samples needs (a 2.3M-row set is
        # not converted to keep 2K rows).
        order, total = np.random.default_rng(seed).permutation(len(ds)), len(ds)

        def window(size: int) -> Dataset:
            return ds.select(order[:size])

    size = n if total is None else total if n is None else min(n, total)
    while True:  # the window grows if dropped rows leave too few
        rows = window(size)
        if len(rows) == 0:
            raise ValueError(f"{name}: split {source['split']!r} has no rows")
        missing = [actual for actual in renames if actual not in rows.column_names]
        if missing:
            present = ", ".join(rows.column_names)
            raise ValueError(f"{name}: columns mapping names {', '.join(missing)}, not in the data (columns present: {present})")
        exhausted = len(rows) < size or size == total
        rows = rows.rename_columns(renames) if renames else rows
        adapted = _adapt(rows, adapter, name, None if order is None else order[:size], source.get("invalid_rows", "raise"))
        out, counts = _clean(adapted)
        if n is None or len(out) >= n or exhausted:
            break
        size = 2 * size if total is None else min(total, 2 * size)
    _report(name, counts)
    if n is not None and len(out) < n:
        print(f"{name}: num_samples={n} but only {len(out)} usable rows; using them all")
    return out.select(range(min(n, len(out)))) if n is not None and len(out) > n else out


def build_split(recipe: dict[str, Any], part: str, seed: int, index: int | None = None) -> Dataset:
    """One stage's dataset: the part's sources, loaded and concatenated.

    ``part`` is ``sft``, ``preference``, ``iteration_prompts`` (``index`` = 0-based iteration,
    required) or ``eval_prompts``. Duplicates across sources are dropped as well.
    """
    if part not in PARTS:
        raise ConfigError(f"part {part!r}: must be one of {', '.join(PARTS)}")
    if recipe.get("kind") != "mixture":
        raise ConfigError(f"part {part!r}: the recipe is of kind {recipe.get('kind')!r}, not a mixture")
    sources = recipe.get(part)
    if not sources:
        raise ConfigError(f"part {part!r}: the recipe has no sources for it")
    if part == "iteration_prompts":
        if index is None or not 0 <= index < len(sources):
            raise ConfigError(
                f"iteration_prompts: index {index!r} out of range (the recipe lists {len(sources)} iterations, 0-based)"
            )
        sources = [sources[index]]
    elif index is not None:
        raise ConfigError(f"part {part!r}: index is only for iteration_prompts")
    parts = [load_source(src, seed) for src in sources]
    if len(parts) == 1:
        return parts[0]
    return drop_rows(datasets.concatenate_datasets(parts), part)
