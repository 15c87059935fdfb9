"""The run directory: every file a training run writes, named in one place.

::

    output/
      train_result.json     TrainResult (below): status, schedule unit and progress, best, paths,
                            what the initial weights gave (init_weights)
      metrics.jsonl         one JSON object per logged training step and per evaluation
      train.log             the run's log (workbench, and the family engine's own loggers)
      config.yaml           the resolved configuration
      model_final.pth       the weights at the end of training
      best_model/           model.pth (best val mask AP), config.yaml, best_metrics.json
      model_NNNNNNN.pth     training-state checkpoints (model, optimizer …) for resume; the newest
      last_checkpoint       is named in this file, at most ``max_to_keep`` are kept

A run directory is self-consistent at every moment: files are written atomically; while a run is
going, ``train_result.json`` says ``"running"`` with the process (``pid``, ``host``) and a heartbeat
(``updated_at``, rewritten at every logged step), so a run killed with ``kill -9`` or a power cut
reads back as ``"killed"`` (``read_train_result``) and is marked so by the next run started in the
folder. Resuming cuts ``metrics.jsonl`` back to the checkpoint it resumes from
(``truncate_metrics``: no duplicate records) and deletes checkpoints of the abandoned steps after it.

Every run has its own folder (``new_run_dir``): a run given ``output`` writes there if no run was
started there yet, else to ``output-2``, ``output-3`` … (one past the highest number); a resumed run
continues in the newest folder of that series. ``<parent>/latest.json`` (``LATEST``, replaced
atomically; no symlink, so Windows alike) names the run that last saved a best model
(``RunDir.mark_latest``); ``latest_run`` turns a run folder of a series, or ``<parent>/latest``, into
the latest run with weights, which is what ``engine.weights.resolve_weights`` (so ``create_model``),
evaluate/predict/export and pre-label use.

``TrainResult`` is the one ``train_result.json`` schema of every model family; ``unit`` says what
``epochs_iters``/``max_epochs_iters``/``best_epochs_iters`` count (``"iterations"`` or ``"epochs"``);
``iterations`` always counts optimizer steps. ``init_weights`` reports what the initial weights
gave (``engine.weights.LoadReport.to_dict()``: their source, how many tensors were loaded, every
tensor skipped with the reason — e.g. the class-specific layers re-initialised when fine-tuning to
other classes —, missing and unexpected names); ``None`` when training from scratch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..utils.io import atomic_write_json, atomic_write_text
from .errors import NoTrainedModelError

logger = logging.getLogger("workbench.train")

UNITS = ("iterations", "epochs")
STATUSES = ("running", "done", "stopped_early", "stopped", "failed", "killed")


def process_alive(pid: int | None, host: str | None) -> bool | None:
    """Whether process ``pid`` on ``host`` still runs; ``None`` when it cannot be told (another host)."""
    if not pid or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_train_result(path: str | os.PathLike) -> dict:
    """``train_result.json`` as written, except that a ``"running"`` run whose process no longer
    exists reads as ``"killed"`` (it ended without writing its status: ``kill -9``, out of memory,
    power cut), with ``error`` saying so."""
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    if d.get("status") == "running" and process_alive(d.get("pid"), d.get("host")) is False:
        d["status"] = "killed"
        d["done_flag"] = False
        d["error"] = (
            f"the training process (pid {d.get('pid')}) ended without finishing after {d.get('iterations', 0)} "
            f"iterations (killed or crashed); the last heartbeat was {d.get('updated_at')}. Resume it with "
            "Train.resume=True"
        )
    return d


@dataclass
class TrainResult:
    """What ``train_result.json`` holds (written by ``RunDir.write_result`` only)."""

    status: str
    model_name: str
    family: str
    unit: str
    epochs_iters: int = 0
    max_epochs_iters: int = 0
    iterations: int = 0
    max_iterations: int | None = None
    best_epochs_iters: int | None = None
    best_metrics: dict | None = None
    final_metrics: dict | None = None
    classes: list = field(default_factory=list)
    paths: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    train_args: dict = field(default_factory=dict)
    init_weights: dict | None = None
    error: str | None = None
    pid: int | None = None  # the process writing the run (rank 0)
    host: str | None = None
    updated_at: str | None = None  # heartbeat: local time of this write

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        if self.unit not in UNITS:
            raise ValueError(f"unit {self.unit!r} is not one of {UNITS}")

    @property
    def done_flag(self) -> bool:
        return self.status in ("done", "stopped_early")

    def to_dict(self) -> dict:
        return {"done_flag": self.done_flag, **asdict(self)}


class RunDir:
    """The output folder of one training run; owns the names of the files in it."""

    TRAIN_RESULT = "train_result.json"
    METRICS = "metrics.jsonl"
    LOG = "train.log"
    CONFIG = "config.yaml"
    FINAL = "model_final.pth"
    BEST_DIR = "best_model"
    BEST_WEIGHTS = "model.pth"
    BEST_METRICS = "best_metrics.json"
    LAST_POINTER = "last_checkpoint"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    def make(self) -> RunDir:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    # ------------------------------------------------------------------ names
    @property
    def train_result(self) -> Path:
        return self.root / self.TRAIN_RESULT

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def log(self) -> Path:
        return self.root / self.LOG

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def final(self) -> Path:
        return self.root / self.FINAL

    @property
    def best_dir(self) -> Path:
        return self.root / self.BEST_DIR

    @property
    def best_weights(self) -> Path:
        return self.best_dir / self.BEST_WEIGHTS

    def checkpoint(self, step: int) -> Path:
        """The training-state checkpoint after ``step`` (in the family's unit)."""
        return self.root / f"model_{int(step):07d}.pth"

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.root.glob("model_[0-9]*.pth") if p.stem[6:].isdigit())

    def last_checkpoint(self) -> Path | None:
        """The newest training-state checkpoint named in ``last_checkpoint``, if it exists."""
        ptr = self.root / self.LAST_POINTER
        if ptr.is_file():
            p = self.root / ptr.read_text().strip()
            if p.is_file():
                return p
        return None

    def mark_last(self, path: Path, max_to_keep: int | None = None) -> None:
        """Point ``last_checkpoint`` at ``path`` and delete the oldest beyond ``max_to_keep``."""
        atomic_write_text(self.root / self.LAST_POINTER, path.name)
        self.prune_checkpoints(max_to_keep, keep=path)

    def prune_checkpoints(self, max_to_keep: int | None, keep: Path | None = None) -> list[Path]:
        """Delete all but the newest ``max_to_keep`` training-state checkpoints (never ``keep``)."""
        if not max_to_keep:
            return []
        gone = [p for p in self.checkpoints()[: -int(max_to_keep)] if p != keep]
        for p in gone:
            p.unlink(missing_ok=True)
        return gone

    def paths(self) -> dict:
        last = self.last_checkpoint()
        return {
            "output": str(self.root),
            "model_final": str(self.final) if self.final.exists() else None,
            "best_model": str(self.best_dir) if self.best_weights.exists() else None,
            "last_checkpoint": str(last) if last else None,
            "config": str(self.config),
            "log": str(self.log),
            "metrics": str(self.metrics),
        }

    def best_or_final(self) -> Path | None:
        """The weights to use after training: ``best_model/`` if written, else ``model_final.pth``."""
        if self.best_weights.is_file():
            return self.best_dir
        return self.final if self.final.is_file() else None

    def eval_weights(self) -> Path:
        """Default weights to evaluate or predict with: best, else final."""
        for p in (self.best_weights, self.final):
            if p.is_file():
                return p
        raise NoTrainedModelError(no_trained_model(self.root))

    def has_weights(self) -> bool:
        """Whether the run wrote weights to use (``best_model/model.pth`` or ``model_final.pth``)."""
        return self.best_weights.is_file() or self.final.is_file()

    def mark_if_killed(self) -> dict | None:
        """A ``train_result.json`` that says ``"running"`` though its process is gone is rewritten with
        status ``"killed"``; returns the record as it was then, ``None`` if nothing was marked."""
        try:
            raw = json.loads(self.train_result.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if raw.get("status") != "running" or process_alive(raw.get("pid"), raw.get("host")) is not False:
            return None
        atomic_write_json(self.train_result, read_train_result(self.train_result))
        return raw

    def mark_latest(self) -> None:
        """Point the ``latest.json`` of the parent folder at this run (atomically replaced)."""
        atomic_write_json(
            self.root.parent / LATEST,
            {"run": self.root.name, "best_model": f"{self.root.name}/{self.BEST_DIR}", "updated_at": _now()},
        )

    # ------------------------------------------------------------------ writing
    def write_result(self, result: TrainResult) -> dict:
        if result.pid is None:
            result.pid, result.host = os.getpid(), socket.gethostname()
        result.updated_at = _now()
        d = result.to_dict()
        atomic_write_json(self.train_result, d)
        return d

    def read_result(self) -> dict:
        """``train_result.json`` (``read_train_result``: a run whose process died reads ``"killed"``)."""
        return read_train_result(self.train_result)

    def truncate_metrics(self, iterations: int, done: int) -> int:
        """Drop the records logged after the checkpoint a run resumes from (train records past
        optimizer step ``iterations``, evaluations past unit ``done``); returns how many."""
        if not self.metrics.is_file():
            return 0
        keep, dropped = [], 0
        for line in self.metrics.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                dropped += 1
                continue
            late = (r.get("type") == "eval" and (r.get("epochs_iters") or 0) > done) or (
                r.get("type") != "eval" and (r.get("iter") or 0) > iterations
            )
            if late:
                dropped += 1
            else:
                keep.append(line)
        if dropped:
            atomic_write_text(self.metrics, "".join(x + "\n" for x in keep))
        return dropped

    def drop_checkpoints_after(self, step: int) -> list[Path]:
        """Delete the training-state checkpoints of steps after ``step`` (a resumed run's abandoned
        future: it writes them again); returns the deleted paths."""
        gone = [p for p in self.checkpoints() if int(p.stem[6:]) > int(step)]
        for p in gone:
            p.unlink(missing_ok=True)
        return gone

    def write_config(self, text: str, best: bool = False) -> None:
        atomic_write_text((self.best_dir if best else self.root) / self.CONFIG, text)

    def write_best_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.best_dir / self.BEST_METRICS, metrics)

    def reset_metrics(self) -> None:
        self.metrics.unlink(missing_ok=True)

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics.is_file():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    @contextlib.contextmanager
    def logging_to_file(self, loggers: tuple[str, ...] = ("workbench",), enabled: bool = True) -> Iterator[None]:
        """INFO records of ``loggers`` appended to ``train.log`` while the block runs."""
        if not enabled:
            yield
            return
        self.make()
        handler = logging.FileHandler(self.log, mode="a")
        handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%m/%d %H:%M:%S"))
        handler.setLevel(logging.INFO)
        saved: list[tuple[logging.Logger, int]] = []
        for name in loggers:
            lg = logging.getLogger(name)
            saved.append((lg, lg.level))
            if lg.level == logging.NOTSET or lg.level > logging.INFO:
                lg.setLevel(logging.INFO)
            lg.addHandler(handler)
        try:
            yield
        finally:
            for lg, level in saved:
                lg.removeHandler(handler)
                lg.setLevel(level)
            handler.close()


# ---------------------------------------------------------------------- one folder per run
LATEST = "latest.json"  # in the parent of the run folders: {"run": "train-3", "best_model": ..., "updated_at": ...}
_NUMBERED = re.compile(r"^(?P<base>.+)-(?P<n>[0-9]+)$")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def no_trained_model(path: str | os.PathLike) -> str:
    """The one message for weights that a training run should have written but did not."""
    return f"no trained model at {path}: train first (04_train) or set model_dir"


def run_number(base: str | os.PathLike, name: str) -> int | None:
    """1 for ``base`` itself, N for ``<base>-N`` (N >= 2), ``None`` for any other folder name."""
    b = Path(base).name
    if name == b:
        return 1
    m = _NUMBERED.match(name)
    if m and m["base"] == b and int(m["n"]) >= 2 and m["n"] == str(int(m["n"])):
        return int(m["n"])
    return None


def numbered(base: str | os.PathLike, n: int) -> Path:
    """The folder of run ``n`` of the series ``base``: ``base`` itself for 1, else ``<base>-<n>``."""
    base = Path(base)
    return base if n <= 1 else base.with_name(f"{base.name}-{n}")


def series_runs(base: str | os.PathLike) -> list[Path]:
    """The existing folders of the series ``base`` (``base``, ``base-2``, ``base-3`` …), oldest first."""
    base = Path(base)
    if not base.parent.is_dir():
        return []
    found = []
    for p in base.parent.iterdir():
        n = run_number(base, p.name)
        if n is not None and p.is_dir():
            found.append((n, p))
    return [p for _, p in sorted(found)]


def new_run_dir(output: str | os.PathLike, resume: bool = False, resume_path: str | os.PathLike | None = None) -> Path:
    """The folder a training run given ``output`` writes to: every run its own folder.

    * A new run (``resume=False``) takes ``output`` when no run was started there yet (no folder, an
      empty one, or one without ``train_result.json``); else the next free number of the series:
      ``output-2``, ``output-3`` … (one past the highest that exists). A run of the series left
      ``"running"`` by a dead process is marked ``"killed"`` on the way.
    * A resumed run continues in its own folder: the newest folder of the series that holds a run
      (``train_result.json`` or a ``last_checkpoint``), or the folder of ``resume_path`` when that is
      one of the series; ``output`` itself when the series holds none (resume then says why not).
    * Under an outside launcher (torchrun, several processes) every process must agree on the folder
      without talking first: ``output`` as given.
    """
    from .launcher import external_group

    base = Path(output)
    ext = external_group()
    if ext is not None and ext["world"] > 1:
        return base
    runs = series_runs(base)
    if resume:
        if resume_path is not None:
            parent = Path(resume_path).resolve().parent
            for r in runs:
                if r.resolve() == parent:
                    return r
        started = [r for r in runs if (r / RunDir.TRAIN_RESULT).is_file() or (r / RunDir.LAST_POINTER).is_file()]
        return started[-1] if started else base
    if not runs:
        return base
    newest = runs[-1]
    if not (newest / RunDir.TRAIN_RESULT).is_file():
        return newest  # created, never started (e.g. by the training panel for this run)
    for r in runs:
        raw = RunDir(r).mark_if_killed()
        if raw is not None:
            logger.warning("the run in %s was killed after %d iterations; marked 'killed'", r, raw.get("iterations", 0))
    return numbered(base, run_number(base, newest.name) + 1)


def latest_run(path: str | os.PathLike) -> Path:
    """The run folder that ``path`` stands for when it names a series of runs, else ``path`` itself.

    ``<parent>/latest`` (no such folder) is the run ``<parent>/latest.json`` points at. A run folder
    ``output`` (with ``output-2`` … beside it) is the latest run of its series that has weights:
    the one ``latest.json`` names if it is of the series, else the highest-numbered; ``output/best_model``
    or a weights file name one run exactly and are returned unchanged."""
    p = Path(path)
    if p.name == "latest" and not p.exists():
        try:
            run = json.loads((p.parent / LATEST).read_text(encoding="utf-8"))["run"]
        except (OSError, ValueError, KeyError, TypeError):
            return p
        return p.parent / str(run)
    runs = series_runs(p)
    if not any((r / RunDir.TRAIN_RESULT).is_file() for r in runs):
        return p
    with_weights = [r for r in runs if RunDir(r).has_weights()]
    try:
        pointed = json.loads((p.parent / LATEST).read_text(encoding="utf-8")).get("run")
    except (OSError, ValueError, AttributeError):
        pointed = None
    for r in with_weights:
        if r.name == pointed:
            return r
    if with_weights:
        return with_weights[-1]
    return runs[-1]


def jsonable(x: Any) -> Any:
    """``x`` with tuples as lists and paths as strings (for JSON/YAML files)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, os.PathLike):
        return str(x)
    return x
