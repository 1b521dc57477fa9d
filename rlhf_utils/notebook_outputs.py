"""Clean the stored outputs of an executed notebook: what a reader sees on GitHub, minus clutter.

Progress bars stay live while a notebook runs; only what is stored afterwards is cleaned:

* progress bars: tqdm redraws in ``stream`` outputs (each refresh arrives as its own output) and
  transformers' HTML progress table (``display_data`` with ``<progress``);
* library warnings on stderr (``...Warning:`` lines, ``WARNING``, transformers' LOAD REPORT
  tables, ANSI-coloured lines); ANSI codes are stripped from whatever is kept;
* absolute paths of the machine that ran it: paths under the repository become relative;
  ``/tmp/...`` paths are only counted (no safe rewrite exists for them).

Printed lines, DataFrames, figures and execution counts are kept as they are.

Usage::

    counts = clean_outputs(nb, REPO_ROOT)       # mutates nb, returns what it removed/rewrote
    counts = clean_file("notebooks/04_online_iterative_dpo.ipynb", REPO_ROOT)
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from pathlib import Path

import nbformat

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# tqdm's default line: "desc: 50%|█████     | 8/16 [00:01<00:02, 3.2it/s]" (with a total) or
# "desc: 16it [00:01, 3.2it/s]" (without); the time-and-rate bracket is in every redraw.
BAR = re.compile(r"\d+%\|[^|\n]*\| *\d+/\d+|\[(\d+:)?\d+:\d+(<[^,\]]*)?, [^\]]*/[^\]]*\]")
WARNING = re.compile(r"Warning:|WARNING")
# transformers' NotebookProgressCallback; IPython's repr of an HTML object with nothing else.
PROGRESS_HTML = "<progress"
HTML_REPR = "<IPython.core.display.HTML object>"
TMP_PATH = re.compile(r"(?<![\w.])/tmp/[^\s'\"<>)\]]*")


def _shown(line: str) -> str:
    """What a terminal shows of a line redrawn with ``\\r``: its last non-empty segment
    (tqdm pads every redraw to the full width, so the last one covers the earlier ones)."""
    segments = [s for s in line.split("\r") if s]
    return segments[-1] if segments else ""


def _is_noise(plain: str, raw: str, skipping: bool) -> bool:
    """A stderr line a reader cannot act on, or the continuation of one (``skipping``)."""
    if "LOAD REPORT" in plain or WARNING.search(plain) or ANSI.search(raw):
        return True
    # A LOAD REPORT goes on as a table, a blank line and "Notes:" / "- MISSING: ..." lines; a
    # Python warning with its indented source line ("  warnings.warn(").
    return skipping and (plain.startswith((" ", "\t")) or "|" in plain
                         or re.fullmatch(r"[-+]*|Notes:|- .*", plain.strip()) is not None)


def _clean_stream(text: str, stderr: bool, counts: Counter) -> str:
    kept, skipping = [], False
    pieces = re.sub(r"\r+\n", "\n", text).split("\n")
    for i, line in enumerate(pieces):
        end = "\n" if i < len(pieces) - 1 else ""
        shown = _shown(line)
        plain = ANSI.sub("", shown)
        if BAR.search(plain):
            counts["bar_lines"] += 1
            continue
        skipping = stderr and _is_noise(plain, shown, skipping)
        if skipping:
            counts["warning_lines"] += bool(plain.strip())
            continue
        counts["lines_unstyled"] += plain != line  # \r redraws or ANSI codes taken out
        kept.append(plain + end)
    return "".join(kept)


def _is_progress_display(output: nbformat.NotebookNode) -> bool:
    data = output.get("data", {})
    html, plain = str(data.get("text/html", "")), str(data.get("text/plain", "")).strip()
    if any(k.startswith("image/") for k in data):
        return False
    if PROGRESS_HTML in html:
        return True
    if "application/vnd.jupyter.widget-view+json" in data:  # tqdm.auto's widget bar (state is stripped)
        return bool(BAR.search(plain)) or plain.startswith("HBox(")
    return set(data) <= {"text/plain", "text/html"} and plain in ("", HTML_REPR) and not html.strip()


def _relative(text: str, roots: list[str], counts: Counter) -> str:
    for root in roots:
        # "<root>/x" -> "x" and "<root>" -> "."; "<root>2/..." is another directory, left alone.
        text, n = re.subn(re.escape(root) + r"(/|(?![\w-]|\.\w))", lambda m: "" if m.group(1) else ".", text)
        counts["repo_paths"] += n
    counts["tmp_paths"] += len(TMP_PATH.findall(text))
    return text


def clean_outputs(nb: nbformat.NotebookNode, repo_root: Path) -> dict[str, int]:
    """Clean every code cell's outputs in place; returns the non-zero counts of what it removed or rewrote."""
    counts: Counter = Counter()
    root = Path(repo_root)
    roots = sorted({str(root), str(root.resolve())}, key=len, reverse=True)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            kind = out.output_type
            if kind == "stream":
                text = _clean_stream(out.text, out.name == "stderr", counts)
                # tqdm's closing "\n" on stderr, or a stream reduced to nothing: no output at all.
                if not text.strip() and (out.name == "stderr" or text != out.text):
                    counts["streams_dropped"] += 1
                    continue
                out.text = _relative(text, roots, counts)
            elif kind in ("display_data", "update_display_data") and _is_progress_display(out):
                counts["progress_displays"] += 1
                continue
            elif kind == "error":  # kept whole (its colours are Jupyter's), only paths made relative
                out.evalue = _relative(out.evalue, roots, counts)
                out.traceback = [_relative(t, roots, counts) for t in out.traceback]
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/"):
                    text = "".join(value) if isinstance(value, list) else value
                    out.data[mime] = _relative(text, roots, counts)
            outputs.append(out)
        cell.outputs = outputs
    return {k: v for k, v in counts.items() if v}


def clean_file(path: str | Path, repo_root: Path) -> dict[str, int]:
    """Read, clean and rewrite a notebook atomically (a reader never sees a half-written file)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    counts = clean_outputs(nb, repo_root)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            nbformat.write(nb, fh)
        os.chmod(tmp, path.stat().st_mode & 0o777)  # mkstemp's 0600 would replace the file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return counts
