"""The stored outputs of the committed notebooks carry no clutter, and cleaning keeps the content."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rlhf_utils.notebook_outputs import clean_file, clean_outputs
from rlhf_utils.pipeline import NOTEBOOK_DIR, NOTEBOOKS, REPO_ROOT

# Paths of "the machine that ran it" in the synthetic notebooks: a fixed root outside /tmp, so the
# counts below do not depend on where this clone lives (CI may clone it under /tmp).
ROOT = Path("/home/someone/rlhf-workflow")
MARK = "# NBVAL_CHECK_OUTPUT"
BAR = "\rgenerate:  50%|█████     | 128/256 [00:00<00:00, 678.07prompt/s]"
LOAD_REPORT = (
    f"[transformers] \x1b[1mLlamaForSequenceClassification LOAD REPORT\x1b[0m from: {ROOT}/runs/tiny/models/sft\n"
    "Key          | Status  | \n-------------+---------+-\nscore.weight | MISSING | \n\nNotes:\n"
    "- MISSING:\tthose params were newly initialized because missing from the checkpoint.\n"
)
PROGRESS_HTML = "<div><progress value='32' max='32'></progress> [32/32 00:02, Epoch 2/2]</div><table class=\"dataframe\"></table>"
DATAFRAME_HTML = '<div>\n<style scoped>\n</style>\n<table border="1" class="dataframe">\n<tr><td>0.7</td></tr></table>\n</div>'


def stream(text, name="stdout"):
    return new_output("stream", name=name, text=text)


def display(data, kind="display_data"):
    if kind == "update_display_data":  # a message type, outside the file schema new_output checks
        return nbformat.from_dict({"output_type": kind, "data": data, "metadata": {}})
    return new_output(kind, data=data, **({"execution_count": 3} if kind == "execute_result" else {}))


def cleaned(*outputs):
    # Put together after the constructors, which validate: update_display_data is no file output type.
    cell, nb = new_code_cell("x", execution_count=3), new_notebook()
    cell.outputs, nb.cells = list(outputs), [cell]
    counts = clean_outputs(nb, ROOT)
    return nb.cells[0], counts


def test_progress_bars_go_and_printed_lines_stay():
    cell, counts = cleaned(
        stream(BAR, "stderr"), stream("\r" + BAR[1:].replace("50%", "100%"), "stderr"), stream("\n", "stderr"),
        stream("iteration 1: 497 pairs, gold 0.7, win rate vs SFT 0.73, 7.8s\n"),
        stream("Map: 100%|██████████| 4000/4000 [00:00<00:00, 1234.56 examples/s]\n", "stderr"),
    )
    assert [o.text for o in cell.outputs] == ["iteration 1: 497 pairs, gold 0.7, win rate vs SFT 0.73, 7.8s\n"]
    assert cell.execution_count == 3
    assert counts["bar_lines"] == 3 and counts["streams_dropped"] == 4


def test_a_mixed_stream_keeps_its_ordinary_lines():
    table = "                  overall   easy\nreward model        0.773  0.932\nName: acc, dtype: float64\n"
    text = f"loading\rloaded\n{BAR}\rComputing reference log probs: 100%|█| 16/16 [00:00<00:00, 40.83it/s]\n{table}| a | 85% |\n"
    cell, counts = cleaned(stream(text))
    assert cell.outputs[0].text == f"loaded\n{table}| a | 85% |\n"
    assert counts["bar_lines"] == 1


def test_library_warnings_leave_stderr_and_ansi_leaves_stdout():
    warning = "/x/site-packages/trl/trainer.py:12: UserWarning: something internal\n  warnings.warn(\n"
    kernel = "[IPKernelApp] WARNING | Unknown message type\n"
    cell, counts = cleaned(
        stream(LOAD_REPORT, "stderr"), stream(warning + kernel + "a message for the reader\n", "stderr"),
        stream("\x1b[1mbold\x1b[0m summary\n"),
    )
    assert [o.text for o in cell.outputs] == ["a message for the reader\n", "bold summary\n"]
    assert counts["warning_lines"] == 6 + 3 and counts["streams_dropped"] == 1


def test_progress_displays_go_dataframes_and_figures_stay():
    figure = display({"image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 600x300 with 1 Axes>"})
    frame = display({"text/html": DATAFRAME_HTML, "text/plain": "   x\n0  0.7"})
    result = display({"text/html": DATAFRAME_HTML, "text/plain": "   x\n0  0.7"}, "execute_result")
    cell, counts = cleaned(
        display({"text/html": PROGRESS_HTML, "text/plain": "<IPython.core.display.HTML object>"}),
        display({"text/html": PROGRESS_HTML}, "update_display_data"),
        display({"text/plain": "<IPython.core.display.HTML object>"}),
        display({"text/html": "", "text/plain": ""}),
        copy.deepcopy(figure), copy.deepcopy(frame), copy.deepcopy(result),
        display({"text/markdown": "**kept**"}),
    )
    assert cell.outputs == [figure, frame, result, display({"text/markdown": "**kept**"})]
    assert counts["progress_displays"] == 4


def test_repo_paths_become_relative_and_tmp_paths_are_counted():
    html = f"<div>{DATAFRAME_HTML}<td>{ROOT}/runs/tiny/report.md</td></div>"
    cell, counts = cleaned(
        stream(f"run dir: {ROOT}/runs/tiny\nsaved to {ROOT}/runs/tiny/models/sft; root {ROOT}\n{ROOT}2/x stays\n"),
        display({"text/plain": f"'{ROOT}/runs/tiny'", "text/html": html}, "execute_result"),
        stream("scratch in /tmp/tmpab12cd/lm\n"),
    )
    assert cell.outputs[0].text == f"run dir: runs/tiny\nsaved to runs/tiny/models/sft; root .\n{ROOT}2/x stays\n"
    assert cell.outputs[1].data == {"text/plain": "'runs/tiny'", "text/html": f"<div>{DATAFRAME_HTML}<td>runs/tiny/report.md</td></div>"}
    assert cell.outputs[2].text == "scratch in /tmp/tmpab12cd/lm\n"  # no guessed rewrite, only counted
    assert counts["repo_paths"] == 5 and counts["tmp_paths"] == 1


def test_clean_file_rewrites_in_place_atomically(tmp_path):
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("x", outputs=[stream(BAR, "stderr"), stream("kept\n")])]), path)
    path.chmod(0o644)
    assert clean_file(path, ROOT) == {"bar_lines": 1, "streams_dropped": 1}
    assert [o.text for o in nbformat.read(path, as_version=4).cells[0].outputs] == ["kept\n"]
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["nb.ipynb"], "no temporary file left behind"
    assert clean_file(path, ROOT) == {}, "cleaning twice changes nothing"


def checked_outputs(nb):
    return [copy.deepcopy(c.outputs) for c in nb.cells if c.cell_type == "code" and c.source.startswith(MARK)]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_clean_up_without_touching_checked_cells(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)  # read only; cleaned in memory
    checked = checked_outputs(nb)
    clean_outputs(nb, REPO_ROOT)
    assert checked_outputs(nb) == checked, "a # NBVAL_CHECK_OUTPUT cell's outputs changed"
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        for out in cell.outputs:
            stored = str(out.get("text", "")) + "".join(str(v) for v in out.get("data", {}).values())
            for clutter in ("\r", "<IPython.core.display.HTML object>", "\x1b[", "MISSING", str(REPO_ROOT)):
                assert clutter not in stored, f"{name}: {clutter!r} left in {stored[:200]!r}"
            if out.output_type == "error":  # a failed run is another test's business; only its paths matter here
                assert str(REPO_ROOT) not in str(out.traceback)


def test_reward_head_load_report_is_dropped_other_reports_kept():
    from rlhf_utils.models import _ExpectedHeadReport

    def report(*rows):
        table = "Key          | Status  | \n-------------+---------+-\n" + "".join(f"{k} | {s} | \n" for k, s in rows)
        return logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0,
                                 f"\x1b[1mX LOAD REPORT\x1b[0m from: m\n{table}\nNotes:\n- ...", None, None)

    keep = _ExpectedHeadReport().filter
    assert not keep(report(("score.weight", "\x1b[31mMISSING\x1b[0m")))
    assert not keep(report(("score.weight", "MISSING"), ("lm_head.weight", "UNEXPECTED")))
    assert keep(report(("score.weight", "MISSING"), ("model.layers.0.mlp.up_proj.weight", "MISSING")))
    assert keep(report(("score.weight", "MISMATCH")))
    assert keep(logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0, "another warning", None, None))
