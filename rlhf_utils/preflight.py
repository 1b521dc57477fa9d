"""What the runner checks before the first notebook starts: every hub model can be fetched, and
every data source opens, has its split and the columns its adapter reads, and its first rows adapt.

A bad recipe or an unreachable model then fails in seconds with one paragraph naming the key,
the dataset, the split, the column or the adapter, instead of inside a trainer after a kernel
has started. The checks read a few rows (hub data are streamed, so nothing big is downloaded)
and each model's ``config.json`` (cached for the run that follows).

Usage::

    from rlhf_utils.preflight import preflight
    preflight(load_config("colab_t4"))   # raises PreflightError, or returns what it checked
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from .config import Config, ConfigError
from .recipes import ADAPTERS, PARTS, RowError, is_hub_like, load_recipe, read_source

PEEK_ROWS = 3
# Model values that are not hub ids: built from config, or this run's own SFT model.
NOT_HUB = {"tiny", "sft"}


class PreflightError(ConfigError):
    """A model or data source the run needs cannot be used; the message says which and why."""


def _model_ids(cfg: Config) -> dict[str, str]:
    m = cfg.models
    keys = {"models.policy": m.policy, "models.reward_model": m.reward_model, "models.preference_model": m.preference_model}
    return {k: v for k, v in keys.items() if v not in NOT_HUB and not Path(v).expanduser().is_dir()}


def check_model(key: str, repo_id: str) -> None:
    """Fetch ``config.json`` of a hub model (from the cache when it is there); a failure says
    what to fix. ``HF_TOKEN`` is read by ``huggingface_hub`` itself, never here."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        hf_hub_download(repo_id, "config.json")
    except GatedRepoError:
        raise PreflightError(
            f"{key}: {repo_id} is a gated model. Accept its licence at https://huggingface.co/{repo_id} while "
            "logged in, then set the HF_TOKEN environment variable to a token of that account (on Colab: the "
            "Secrets panel; never in a notebook cell)."
        ) from None
    except RepositoryNotFoundError:
        raise PreflightError(
            f"{key}: no model {repo_id!r} on the Hugging Face Hub (or it is private and HF_TOKEN is not a token "
            "that can read it). Check the id, or point the key at a local directory saved with save_pretrained."
        ) from None
    except LocalEntryNotFoundError:
        raise PreflightError(
            f"{key}: cannot reach the Hugging Face Hub to fetch {repo_id}, and it is not in the local cache. "
            "Check the network (HF_HUB_OFFLINE=1 forbids it), or download the model first."
        ) from None
    except HfHubHTTPError as err:
        raise PreflightError(f"{key}: fetching {repo_id} failed: {err}") from None


def _first_rows(dataset: str, split: str, config: str | None, data_file: str | None = None
                ) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and the first rows of one source; hub data streamed, so only they travel."""
    if not is_hub_like(dataset) or data_file is not None:
        ds = read_source(dataset, split, config, data_file)
        return list(ds.column_names), [ds[i] for i in range(min(PEEK_ROWS, len(ds)))]
    import datasets

    stream = datasets.load_dataset(dataset, config, split=split, streaming=True)
    rows = list(itertools.islice(iter(stream), PEEK_ROWS))
    columns = list(stream.column_names or (rows[0] if rows else []))
    return columns, rows


def check_source(where: str, source: dict[str, Any]) -> None:
    """Open one recipe source and adapt its first rows; raise :class:`PreflightError` naming
    the source (``where``, e.g. ``rlhflow_small: preference[0]``), dataset, split, column or row."""
    name, split, adapter_name = source["dataset"], source["split"], source["adapter"]
    adapter = ADAPTERS[adapter_name]
    label = f"{where}: dataset {name}, split {split!r}"
    try:
        columns, rows = _first_rows(name, split, source.get("config"), source.get("data_file"))
    except (FileNotFoundError, ValueError, OSError) as err:
        # datasets names a missing split ("Unknown split ...", "Bad split ...") and an unknown or
        # gated dataset in its own words; keep them, after ours.
        raise PreflightError(f"{label}: cannot be opened: {err}") from None
    if not rows:
        raise PreflightError(f"{label}: has no rows")
    renames = {actual: expected for expected, actual in (source.get("columns") or {}).items()}
    for actual in renames:
        if actual not in columns:
            raise PreflightError(f"{label}: the source's columns mapping names {actual!r}, which it does not have "
                                 f"(columns: {', '.join(columns)})")
    present = {renames.get(c, c) for c in columns}
    for alternatives in adapter.columns:
        if not present.intersection(alternatives):
            wanted = " or ".join(repr(c) for c in alternatives)
            raise PreflightError(f"{label}: adapter {adapter_name!r} reads column {wanted}, which it does not have "
                                 f"(columns: {', '.join(columns)}; map yours with the source's columns: key)")
    if source.get("invalid_rows", "raise") == "drop":
        return  # malformed rows are skipped and counted by the run itself
    for i, row in enumerate(rows):
        try:
            adapter.fn({renames.get(k, k): v for k, v in row.items()})
        except RowError as err:
            raise PreflightError(f"{label}: row {i}: {err} (adapter {adapter_name!r}; set invalid_rows: drop to "
                                 "skip such rows)") from None


def preflight(cfg: Config) -> list[str]:
    """Check every hub model and every data source of ``cfg``; return what was checked."""
    checked = []
    for key, repo_id in _model_ids(cfg).items():
        check_model(key, repo_id)
        checked.append(f"{key}: {repo_id}")
    recipe = load_recipe(cfg.data.recipe)
    if recipe.get("kind") == "mixture":
        name = Path(cfg.data.recipe).stem
        for part in PARTS:
            for i, source in enumerate(recipe.get(part) or []):
                check_source(f"{name}: {part}[{i}]", source)
                checked.append(f"{part}[{i}]: {source['dataset']} ({source['split']})")
        for bench, source in (recipe.get("benchmarks") or {}).items():
            check_source(f"{name}: benchmarks.{bench}", source)
            checked.append(f"benchmarks.{bench}: {source['dataset']} ({source['split']})")
    return checked
