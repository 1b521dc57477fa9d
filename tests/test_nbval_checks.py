"""The nbval checks of the committed notebooks hold on every CPU and still catch a regression.

Each notebook's ``# NBVAL_CHECK_OUTPUT`` cell reads only ``results``. Here every such cell, with
the output stored in the committed notebook, runs under nbval (with the repository's sanitize
file, as ``make test`` runs it) after a cell that sets ``results`` to this machine's tiny run:

* as measured, and with every number nudged (in the last digits, and by a few hundredths, as
  another CPU's kernels would move them): the check passes;
* with a result key renamed, a summary line gone, or its wording changed: the check fails.

All variants run in one nbval session (one pytest process, one kernel per variant), to keep the suite short.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

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
    """Every measured float moved by ``step`` (relative) plus a last-digit shift, as another CPU would
    move it; whole-number floats are counts (comparisons per prompt), the same on every machine."""
    if isinstance(value, dict):
        return {k: nudge(v, step) for k, v in value.items()}
    if isinstance(value, list):
        return [nudge(v, step) for v in value]
    if isinstance(value, float) and not value.is_integer():
        return value * (1 + step) + 0.0007
    return value


def rename_keys(results: dict) -> dict:
    broken = copy.deepcopy(results)
    broken["sft"]["gold"] = broken["sft"].pop("gold_reward")
    broken["online_dpo"]["iterations"][0]["win_rate"] = broken["online_dpo"]["iterations"][0].pop("win_rate_vs_sft")
    return broken


def lose_a_line_and_reword(name: str, cells: list) -> None:
    src = cells[0].source
    if name == "02_reward_model.ipynb":  # a summary line that disappears
        cells[0].source = "\n".join(line for line in src.splitlines() if "Reward-length correlation" not in line)
    if name == "03_preference_model.ipynb":  # its wording changes
        cells[0].source = src.replace("held-out accuracy", "accuracy on held-out pairs")


@pytest.fixture(scope="module")
def outcome(tiny_run, tmp_path_factory) -> dict[str, dict[str, bool]]:
    """variant -> notebook -> whether nbval passed it.

    One notebook per variant (one kernel each): a cell that sets ``results``, then every committed
    notebook's checked cells in order; each cell is its own nbval test, mapped back to its notebook."""
    _, results = tiny_run
    variants = {
        "as_measured": (results, None),
        "last_digits": (nudge(results, 0.001), None),
        "hundredths": (nudge(results, -0.03), None),
        "renamed_key": (rename_keys(results), None),
        "lost_line_and_wording": (results, lose_a_line_and_reword),
    }
    root = tmp_path_factory.mktemp("nbval_checks")
    owner: dict[tuple[str, int], str] = {}  # (variant, cell index) -> the notebook the cell comes from
    for variant, (values, edit) in variants.items():
        (root / f"{variant}.json").write_text(json.dumps(values))
        cells = [nbformat.v4.new_code_cell(f"import json\nresults = json.load(open({str(root / f'{variant}.json')!r}))")]
        for name in NOTEBOOKS:
            mine = copy.deepcopy(checked_cells(name))
            if edit:
                edit(name, mine)
            owner |= {(variant, len(cells) + i): name for i in range(len(mine))}
            cells += mine
        nb = nbformat.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, root / f"{variant}.ipynb")
    report = root / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
         "--nbval-sanitize-with", str(SANITIZE), f"--junitxml={report}", "--rootdir", str(root),
         *(str(root / f"{v}.ipynb") for v in variants)],
        capture_output=True, text=True, timeout=900, cwd=root,
    )
    ran, failed = set(), set()
    for case in ET.parse(report).iter("testcase"):
        variant = next(v for v in variants if v in case.get("classname", "") + case.get("file", ""))
        cell = int(case.get("name", "").split()[-1])  # nbval names each test "Cell <index>"
        ran.add((variant, cell))
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add((variant, owner.get((variant, cell), "setup")))
    assert set(owner) <= ran, f"nbval did not run every checked cell: {sorted(set(owner) - ran)}"
    return {v: {n: (v, n) not in failed for n in NOTEBOOKS} for v in variants}


def test_checks_tolerate_another_cpus_numbers(outcome):
    for variant in ("as_measured", "last_digits", "hundredths"):
        assert all(outcome[variant].values()), f"{variant}: {outcome[variant]}"


def test_checks_catch_a_renamed_key(outcome):
    got = outcome["renamed_key"]
    assert not got["01_sft.ipynb"] and not got["04_online_iterative_dpo.ipynb"]
    assert got["02_reward_model.ipynb"], "an untouched notebook still passes"


def test_checks_catch_a_lost_line_and_changed_wording(outcome):
    got = outcome["lost_line_and_wording"]
    assert not got["02_reward_model.ipynb"] and not got["03_preference_model.ipynb"]
    assert got["01_sft.ipynb"] and got["05_evaluation.ipynb"]
