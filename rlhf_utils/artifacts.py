"""The run directory: atomic writes, ``results.json`` and the artifacts each stage leaves.

Layout of ``runs/<preset>/``::

    config.yaml          the resolved configuration (preset + overrides)
    results.json         every stage adds its numbers under its own key
    manifest.json        written by the runner: versions, git commit, artifacts
    data/<split>/        datasets (save_to_disk)
    models/<name>/       safetensors checkpoints with their tokenizer (init, sft, reward_model, iter_<t>, ...)
    online/iter_<t>/     iteration t's samples, scores, pairs and stats
    eval/<model>.json    each model's held-out samples and summary
    notebooks/           the executed notebooks (runner only)

Everything is written to a temporary name and renamed into place, so an interrupted run
never leaves a half-written file that a later stage would trust. Each artifact carries its
fingerprint (``rlhf_utils.fingerprints``) and a digest of its files, written once when it is
finished; :func:`reusable` decides whether a phase may reuse it.

Usage::

    run = RunDir.open("", cfg)                    # default: <repo>/runs/<preset>
    run.update_results("sft", {"gold_reward": 0.61})
    sft_dir = run.require("models/sft", "01_sft.ipynb", "sft")   # present, and made with these settings
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

if TYPE_CHECKING:
    from .fingerprints import Fingerprints, Stamp

REPO_ROOT = Path(__file__).resolve().parents[1]


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


DIGEST = ".digest.json"
FINGERPRINT = ".fingerprint.json"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _derived(f: Path) -> bool:
    """Files that are not part of an artifact: the digest itself, and the ``cache-*.arrow`` files
    the datasets library writes beside a dataset loaded from disk whenever it is mapped."""
    return f.name == DIGEST or (f.name.startswith("cache-") and f.suffix == ".arrow")


def _files(path: Path) -> list[Path]:
    return [f for f in sorted(path.rglob("*")) if f.is_file() and not _derived(f)]


def dir_digest(path: Path) -> dict[str, dict[str, Any]]:
    """sha256, size and modification time of every file under ``path`` that belongs to the artifact."""
    out = {}
    for f in _files(path):
        st = f.stat()
        out[str(f.relative_to(path))] = {"sha256": file_digest(f), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def stored_digest(path: str | Path) -> dict[str, dict[str, Any]] | None:
    try:
        return json.loads((Path(path) / DIGEST).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def atomic_dir(path: str | Path, stamp: Stamp | None = None) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it gets its fingerprint (``stamp``) and a
    content digest, and replaces ``path`` in one rename, so ``path`` is either absent or complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if stamp is not None:
            (tmp / FINGERPRINT).write_text(json.dumps(stamp.record(), indent=1, sort_keys=True, default=str))
        (tmp / DIGEST).write_text(json.dumps(dir_digest(tmp), indent=1))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_complete(path: str | Path) -> bool:
    """True when ``path`` was finished by :func:`atomic_dir` and its files still match their digest.

    Cheap at any scale: a file whose size and modification time are those recorded when it was
    written is trusted (its sha256 was taken then); only a file whose time changed (a copy
    without ``-p``, an edit) is hashed again. A directory that fails the check (a file
    truncated, edited or missing) is removed, so the phase that writes it runs again.
    """
    path = Path(path)
    digest = stored_digest(path)
    if digest is None or not all(isinstance(v, dict) for v in digest.values()):
        return False  # unfinished, or finished by a version that recorded no sizes: redone
    files = {str(f.relative_to(path)): f for f in _files(path)}
    ok = set(files) == set(digest)
    for name, f in files.items() if ok else ():
        st, want = f.stat(), digest[name]
        if st.st_size != want["bytes"] or (st.st_mtime_ns != want["mtime_ns"] and file_digest(f) != want["sha256"]):
            ok = False
            break
    if not ok:
        print(f"{display_path(path)}: contents do not match the digest written when it was finished; redoing that phase")
        shutil.rmtree(path, ignore_errors=True)
    return ok


def _say(path: Path, stamp: Stamp, changes: list[str]) -> None:
    where = display_path(path)
    if changes:
        print(f"{stamp.phase}: redoing {where} ({'; '.join(changes)})")
    else:
        print(f"{stamp.phase}: reusing {where} (same settings)")


def display_path(path: str | Path) -> str:
    """A path as a reader wants it (``runs/tiny/models/sft``), never the machine's absolute path."""
    parts = Path(path).parts
    for anchor in ("runs", "bench"):
        if anchor in parts:
            return str(Path(*parts[parts.index(anchor):]))
    return str(Path(*parts[-3:]))


def reusable(path: str | Path, stamp: Stamp, quiet: bool = False) -> bool:
    """True when the artifact dir ``path`` is complete and was made with ``stamp``'s settings.

    Prints one line either way (unless ``quiet``); an artifact made with other settings is
    removed, so the phase runs again and writes it with the new stamp.
    """
    path = Path(path)
    if not is_complete(path):
        return False
    try:
        stored = json.loads((path / FINGERPRINT).read_text())
    except (OSError, ValueError):
        stored = None
    changes = stamp.changes(stored)
    if not quiet:
        _say(path, stamp, changes)
    if changes:
        shutil.rmtree(path, ignore_errors=True)
    return not changes


def read_json(path: str | Path, stamp: Stamp | None = None, quiet: bool = False) -> Any | None:
    """A JSON file written by :func:`atomic_write_json`, or None when it is absent, unreadable or
    (given ``stamp``) made with other settings; such a file is removed and its phase redone."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        print(f"{path}: unreadable; redoing the phase that writes it")
        path.unlink(missing_ok=True)
        return None
    if stamp is None:
        return data
    changes = stamp.changes(data.get("fingerprint") if isinstance(data, dict) else None)
    if not quiet:
        _say(path, stamp, changes)
    if changes:
        path.unlink(missing_ok=True)
        return None
    return data


def write_stamped_json(path: str | Path, data: dict[str, Any], stamp: Stamp) -> None:
    """``data`` with its fingerprint under ``"fingerprint"``, written atomically."""
    atomic_write_json(path, {**data, "fingerprint": stamp.record()})


CRASH_ENV = "RLHF_WORKFLOW_CRASH_AT"


def crash_point(name: str) -> None:
    """Fault injection for the resume tests: SIGKILL this process, with no chance to clean up,
    when the environment variable ``RLHF_WORKFLOW_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


RUNS_ENV = "RLHF_RUNS_DIR"


def default_run_dir(preset: str) -> Path:
    """``runs/<preset>`` at the repository root, or under ``$RLHF_RUNS_DIR`` when that is set
    (``make test`` points it at a scratch folder, so a user's own ``runs/tiny`` is left alone)."""
    return Path(os.environ.get(RUNS_ENV) or REPO_ROOT / "runs") / Path(preset).stem


class RunDir:
    """A run's directory and the results it has gathered so far."""

    def __init__(self, path: str | Path, cfg: Any | None = None):
        from .fingerprints import Fingerprints

        self.path = Path(path)
        self.cfg = cfg
        self.stamps: Fingerprints | None = Fingerprints(cfg) if cfg is not None else None

    @classmethod
    def open(cls, path: str | Path | None, cfg: Any) -> "RunDir":
        """Open (creating if needed) the run dir and record the resolved config in it."""
        run = cls(Path(path) if path else default_run_dir(cfg.name), cfg)
        run.path.mkdir(parents=True, exist_ok=True)
        # Temporary dirs and files of a process killed mid-write: never trusted, so removed
        # (by the first process of all nodes only: under `accelerate launch` the others may be writing).
        stale_temps = sorted(run.path.rglob(".*.tmp"), reverse=True) if os.environ.get("RANK", "0") == "0" else []
        for stale in stale_temps:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        atomic_write_text(run.path / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return run

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    def results(self) -> dict[str, Any]:
        if not self.results_path.exists():
            return {}
        return json.loads(self.results_path.read_text())

    def update_results(self, stage: str, values: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
        """Merge ``values`` under ``results[stage]`` (and the stage's wall time under ``timings``)."""
        results = self.results()
        results[stage] = values
        if seconds is not None:
            results.setdefault("timings", {})[stage] = round(seconds, 2)
        atomic_write_json(self.results_path, results)
        return results

    # The online loop's layout: paths only, no model is loaded (a DPO rank under `accelerate launch`
    # needs no reward model).
    def iter_dir(self, t: int) -> Path:
        """Iteration t's samples, scores, pairs and stats."""
        return self.path / f"online/iter_{t}"

    def policy_path(self, t: int) -> str:
        """The policy after iteration t (t = 0: the SFT model)."""
        return str(self.path / ("models/sft" if t == 0 else f"models/iter_{t}"))

    def reference_path(self, t: int) -> str:
        """DPO's reference in iteration t: the SFT model, or (``online.reference: previous``) the policy of t-1."""
        return self.policy_path(0 if self.cfg.online.reference == "sft" else t - 1)

    def stamp(self, phase: str) -> Stamp:
        """The fingerprint of ``phase`` under this run's configuration (see ``rlhf_utils.fingerprints``)."""
        assert self.stamps is not None, "RunDir.open(path, cfg) gives a run dir its configuration"
        return self.stamps(phase)

    def require(self, relative: str, notebook: str, phase: str | None = None, quiet: bool = False) -> Path:
        """The path of an earlier stage's artifact, or a clear error naming the notebook to run first.

        With ``phase``, the artifact must also have been made with this configuration's settings
        for that phase: one made with others is never used (an earlier notebook has to redo it).
        """
        path = self.path / relative
        rerun = f"run notebooks/{notebook} first (or `rlhf-workflow run --resume`) with the same run_dir"
        if not path.exists():
            raise FileNotFoundError(f"{display_path(path)} is missing: {rerun}")
        if phase is not None:
            stored = read_json(path / FINGERPRINT) if path.is_dir() else (read_json(path) or {}).get("fingerprint")
            if changes := self.stamp(phase).changes(stored):
                raise FileNotFoundError(f"{display_path(path)} was made with other settings ({'; '.join(changes)}): {rerun}")
            if not quiet:
                _say(path, self.stamp(phase), [])
        return path
