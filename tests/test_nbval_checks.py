"""The nbval checks of the committed notebooks hold on every CPU and still catch a regression.

Each notebook's ``# NBVAL_CHECK_OUTPUT`` cell reads only ``results``. Here every such cell, with
the output stored in the committed notebook, runs under nbval (with the repository's sanitize
file, as ``make test`` runs it) after a cell that sets ``results`` to this machine's tiny run:

* as measured, and with every number nudged (in the last digits, and by a few hundredths, as
  another CPU's kernels would move them): the check passes;
* with a result key renamed, a summary line gone, or its wording changed: the check fails.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from rlhf_utils.pipeline import NOTEBOOK_DIR, NOTEBOOKS

pytestmark = pytest.mark.e2e

SANITIZE = NOTEBOOK_DIR / "nbval_sanitize.cfg"
MARK = "# NBVAL_CHECK_OUTPUT"


def checked_cells(name: str) -> list[nbformat.NotebookNode]:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(MARK)]
    assert cells and all(c.outputs for c in cells), f"{name}: no checked summary cell with stored outputs"
    return cells


def nudge(value, step: float):
    """Every float moved by ``step`` (relative) plus a last-digit shift, as another CPU would move it."""
    if isinstance(value, dict):
        return {k: nudge(v, step) for k, v in value.items()}
    if isinstance(value, list):
        return [nudge(v, step) for v in value]
    if isinstance(value, float):
        return value * (1 + step) + 0.0007
    return value


def nbval(tmp_path: Path, results: dict, edit=None) -> dict[str, bool]:
    """Run the checked cells of every committed notebook under nbval; notebook name -> passed."""
    paths = {}
    for name in NOTEBOOKS:
        cells = copy.deepcopy(checked_cells(name))
        if edit:
            edit(name, cells)
        (tmp_path / f"{name}.results.json").write_text(json.dumps(results))
        setup = nbformat.v4.new_code_cell(f"import json\nresults = json.load(open({str(tmp_path / f'{name}.results.json')!r}))")
        nb = nbformat.v4.new_notebook(cells=[setup, *cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        paths[name] = tmp_path / name
        nbformat.write(nb, paths[name])
    report = tmp_path / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
         "--nbval-sanitize-with", str(SANITIZE), f"--junitxml={report}", *map(str, paths.values())],
        capture_output=True, text=True, timeout=600,
    )
    import xml.etree.ElementTree as ET

    failed = {name: False for name in NOTEBOOKS}
    for case in ET.parse(report).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed[next(n for n in NOTEBOOKS if n in case.get("classname", "") + case.get("file", "") + case.get("name", ""))] = True
    return {name: not bad for name, bad in failed.items()}


def test_checks_tolerate_another_cpus_numbers(tiny_run, tmp_path):
    _, results = tiny_run
    for step in (0.0, 0.001, -0.03):
        outcome = nbval(tmp_path / f"step{step}", nudge(results, step))
        assert all(outcome.values()), f"numbers nudged by {step:+.3f}: {outcome}"


def test_checks_catch_a_renamed_key(tiny_run, tmp_path):
    _, results = tiny_run
    broken = copy.deepcopy(results)
    broken["sft"]["gold"] = broken["sft"].pop("gold_reward")
    broken["online_dpo"]["iterations"][0]["win_rate"] = broken["online_dpo"]["iterations"][0].pop("win_rate_vs_sft")
    outcome = nbval(tmp_path, broken)
    assert not outcome["01_sft.ipynb"] and not outcome["04_online_iterative_dpo.ipynb"]
    assert outcome["02_reward_model.ipynb"], "an untouched notebook still passes"


def test_checks_catch_a_lost_line_and_changed_wording(tiny_run, tmp_path):
    _, results = tiny_run

    def edit(name, cells):
        src = cells[0].source
        if name == "02_reward_model.ipynb":  # a summary line that disappears
            cells[0].source = "\n".join(line for line in src.splitlines() if "Reward-length correlation" not in line)
        if name == "03_preference_model.ipynb":  # its wording changes
            cells[0].source = src.replace("held-out accuracy", "accuracy on held-out pairs")

    outcome = nbval(tmp_path, results, edit)
    assert not outcome["02_reward_model.ipynb"] and not outcome["03_preference_model.ipynb"]
    assert outcome["01_sft.ipynb"] and outcome["05_evaluation.ipynb"]
