"""The training screen: a panel that trains in a subprocess and draws ``metrics.jsonl`` live.

The subprocess is ``python -m workbench train-worker SPEC_JSON`` (``train_worker_main``): a crash or
a Stop never takes the kernel down, and Stop really ends the process group.
"""
from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from .common import StaticFallback, W, chart_output, error_html, set_figure, styled, wrapping_row

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTING = "starting: loading model and data…"


def read_metrics(path: str | os.PathLike, since: float | None = None) -> list[dict]:
    """Records of ``metrics.jsonl`` (a partly written last line is skipped); none if the file is
    older than ``since`` (a previous run's)."""
    p = Path(path)
    if not p.is_file() or (since is not None and p.stat().st_mtime < since):
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def train_worker_main(argv: list[str]) -> int:
    """Body of the training subprocess, ``workbench train-worker SPEC_JSON`` (``argv = [SPEC_JSON]``).

    SPEC: ``model_name``, ``weights``, ``device``, ``dataset_dir``, ``output_dir``, ``model_kwargs``
    (for ``create_model``) and ``train_kwargs`` (for ``model.train``)."""
    if len(argv) != 1:
        print("usage: python -m workbench train-worker SPEC_JSON", file=sys.stderr)
        return 2
    from ..models import create_model

    spec = json.loads(argv[0])
    model = create_model(spec["model_name"], weights=spec.get("weights"), device=spec.get("device"),
                         **spec.get("model_kwargs", {}))
    model.train(spec["dataset_dir"], output=spec["output_dir"], **spec.get("train_kwargs", {}))
    return 0


def _duration(seconds: float) -> str:
    s = round(max(0.0, seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def progress_of(records: list[dict]) -> dict:
    """Optimizer steps done (``iter``), their total (``max_iter``, None until the first training
    record), seconds per step and the estimated time left, from ``metrics.jsonl`` records."""
    train = [r for r in records if r.get("type") == "train"]
    it = max((int(r["iter"]) for r in records if "iter" in r), default=0)
    last = train[-1] if train else {}
    max_it = last.get("max_iter")
    per = last.get("time") or (last["elapsed_s"] / last["iter"] if last.get("elapsed_s") and last.get("iter")
                               else None)
    eta = (max_it - it) * per if per and max_it else None
    return {"iter": it, "max_iter": max_it, "s_per_iter": per, "eta_s": eta}


class TrainingPanel(StaticFallback, W.VBox):
    """Train a model in a subprocess, with live loss/AP curves read from ``metrics.jsonl``.

    ``start()`` (the Start button) launches ``python -m workbench train-worker`` and returns;
    a thread polls ``output_dir/metrics.jsonl`` and updates the progress bar and the status line
    (``starting: loading model and data… 12 s`` until the first step is logged, then
    ``12 / 800 it · 0.46 s/it · ETA 6:04``, counting optimizer steps) and the figures, side by side
    or stacked when the notebook is narrow. ``stop()`` (the Stop button) interrupts the process
    group (SIGINT, then SIGTERM/SIGKILL if it does not end). ``wait()`` blocks until training ends
    (interrupting the kernel stops training); ``summary()`` then describes the run in a few lines.
    ``epochs_iters``, ``batch_size`` and ``learning_rate`` default to the model family's
    (``family_info(model).train_defaults``) and are reset to the new family's when the model
    changes; ``epochs_iters`` counts the family's unit (iterations or epochs). Extra keyword
    arguments of ``model.train`` (``eval_interval``, ``depth``...) go in ``train_kwargs``; of
    ``create_model`` in ``model_kwargs``.
    """

    def __init__(self, dataset_dir: str = "", output_dir: str = "runs/train", model_name: str | None = None,
                 epochs_iters: int | None = None, batch_size: int | None = None, learning_rate: float | None = None,
                 input_size: int = 640, device: str | None = None, weights: str | None = None,
                 train_kwargs: dict | None = None, model_kwargs: dict | None = None, poll_interval: float = 1.0,
                 **kwargs):
        from ..models import available_models, family_info

        names = available_models()
        model_name = model_name or ("MaskRCNN-ResNet50-FPN" if "MaskRCNN-ResNet50-FPN" in names else names[0])
        info = family_info(model_name)
        d = info.train_defaults
        self.model = styled(W.Dropdown(options=names, value=model_name, description="model",
                                       layout=W.Layout(width="420px")), "wb-model")
        self.dataset_dir = styled(W.Text(value=str(dataset_dir), description="dataset dir",
                                         layout=W.Layout(width="520px")), "wb-dataset-dir")
        self.output_dir = styled(W.Text(value=str(output_dir), description="output dir",
                                        layout=W.Layout(width="520px")), "wb-output-dir")
        self.iters = styled(W.IntText(value=int(d["epochs_iters"] if epochs_iters is None else epochs_iters),
                                      description=info.unit, layout=W.Layout(width="200px")), "wb-iters")
        self.batch_size = styled(W.IntText(value=int(d["batch_size"] if batch_size is None else batch_size),
                                           description="batch size", layout=W.Layout(width="200px")), "wb-batch-size")
        self.lr = styled(W.FloatText(value=float(d["learning_rate"] if learning_rate is None else learning_rate),
                                     description="learning rate", layout=W.Layout(width="220px")), "wb-lr")
        self.input_size = styled(W.IntText(value=int(input_size), description="input size",
                                           layout=W.Layout(width="200px")), "wb-input-size")
        self.start_button = styled(W.Button(description="Start", button_style="success", icon="play"), "wb-start")
        self.stop_button = styled(W.Button(description="Stop", button_style="danger", icon="stop", disabled=True),
                                  "wb-stop")
        self.progress = styled(W.IntProgress(value=0, min=0, max=1, description="0 it"), "wb-progress")
        self.status = styled(W.HTML("not started"), "wb-status")
        self.loss_out = chart_output("wb-loss-curve")
        self.metric_out = chart_output("wb-metric-curve")
        self.charts = wrapping_row([self.loss_out, self.metric_out], "wb-training-charts")
        self.device, self.weights = device, weights
        self.train_kwargs, self.model_kwargs = dict(train_kwargs or {}), dict(model_kwargs or {})
        self.poll_interval = float(poll_interval)
        self.process: subprocess.Popen | None = None
        self.records: list[dict] = []
        self.train_result: dict | None = None
        self.state = "idle"  # idle | running | done | failed | stopped
        self._thread: threading.Thread | None = None
        self._t_start = 0.0
        self._stop_requested = False
        super().__init__([self.model, self.dataset_dir, self.output_dir,
                          wrapping_row([self.iters, self.batch_size, self.lr, self.input_size]),
                          wrapping_row([self.start_button, self.stop_button, self.progress, self.status],
                                       align_items="center"),
                          self.charts], **kwargs)
        self.add_class("wb-training-panel")
        self.model.observe(lambda c: self.apply_family_defaults(c["new"]), "value")
        self.start_button.on_click(lambda _b: self._click_start())
        self.stop_button.on_click(lambda _b: self.stop())
        self._draw()

    # ------------------------------------------------------------------ control
    @property
    def unit(self) -> str:
        from ..models import family_info

        return family_info(self.model.value).unit

    def apply_family_defaults(self, model_name: str | None = None) -> None:
        """Schedule label and defaults (``epochs_iters``, batch size, learning rate) of the family."""
        from ..models import family_info

        info = family_info(model_name or self.model.value)
        d = info.train_defaults
        self.iters.description = info.unit
        self.iters.value, self.batch_size.value, self.lr.value = (int(d["epochs_iters"]), int(d["batch_size"]),
                                                                  float(d["learning_rate"]))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spec(self) -> dict:
        return {"model_name": self.model.value, "weights": self.weights, "device": self.device,
                "dataset_dir": str(Path(self.dataset_dir.value).resolve()),
                "output_dir": str(Path(self.output_dir.value).resolve()), "model_kwargs": self.model_kwargs,
                "train_kwargs": {"epochs_iters": int(self.iters.value), "batch_size": int(self.batch_size.value),
                                 "learning_rate": float(self.lr.value), "input_size": int(self.input_size.value),
                                 "progress": False, **self.train_kwargs}}

    def command(self, spec: dict) -> list[str]:
        """The training subprocess's command line."""
        return [sys.executable, "-m", "workbench", "train-worker", json.dumps(spec)]

    def _click_start(self) -> None:
        try:
            self.start()
        except Exception as e:  # noqa: BLE001 - shown in the panel, not raised from a button
            self.status.value = error_html(f"cannot start: {e}")

    def start(self) -> None:
        if self.running:
            raise RuntimeError("training is already running; stop it first")
        spec = self._spec = self.spec()  # fixed for this run, whatever the fields show later
        from ..engine.run_dir import new_run_dir  # this run's own folder: output_dir, else output_dir-2 …

        kw = spec["train_kwargs"]
        spec["output_dir"] = str(new_run_dir(spec["output_dir"], bool(kw.get("resume")), kw.get("resume_path")))
        out = self.run_dir = Path(spec["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        self.records, self.train_result, self._stop_requested = [], None, False
        self.progress.max, self.progress.value, self.progress.bar_style = 1, 0, "info"
        self._t_start = time.time()
        self.log_path = out / "training_panel.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.command(spec), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, env=env)
        self.state = "running"
        self.status.value = " · ".join(self._status_parts(progress_of([])))
        self.start_button.disabled, self.stop_button.disabled = True, False
        self._thread = threading.Thread(target=self._poll, name="wb-training-poll", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop training: SIGINT to the process group, then SIGTERM, then SIGKILL."""
        import signal

        p = self.process
        if p is None or p.poll() is not None:
            return
        self._stop_requested = True
        self.status.value = "stopping…"
        for sig, wait in ((signal.SIGINT, timeout / 2), (signal.SIGTERM, timeout / 2), (signal.SIGKILL, 5)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def wait(self, timeout: float | None = None) -> dict | None:
        """Block until training ends; returns ``train_result.json``. Interrupting stops training."""
        try:
            if self._thread is not None:
                self._thread.join(timeout)
        except KeyboardInterrupt:
            self.stop()
            print("training stopped (kernel interrupted)")
        if self.state == "failed":
            raise RuntimeError(f"training failed: {self._failure()}")
        return self.train_result

    async def wait_async(self, timeout: float | None = None) -> dict | None:
        """``wait()`` for a notebook cell: ``train_result = await panel.wait_async()``.

        While a cell blocks in ``wait()`` the kernel handles no widget events, so the panel's Stop
        button only acts after training has ended. An awaiting cell leaves the kernel's event loop
        free: ipykernel (7.4+) then delivers widget messages while the cell waits, and Stop works.
        Interrupting the kernel stops training, as with ``wait()``."""
        import asyncio

        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while self._thread is not None and self._thread.is_alive() \
                    and (deadline is None or time.monotonic() < deadline):
                await asyncio.sleep(0.2)
        except (KeyboardInterrupt, asyncio.CancelledError):
            self.stop()
            print("training stopped (kernel interrupted)")
        return self.wait(0)

    def _failure(self) -> str:
        if self.train_result and self.train_result.get("error"):
            return self.train_result["error"]
        try:
            tail = self.log_path.read_text().strip().splitlines()[-15:]
        except OSError:
            tail = []
        return "\n".join(tail) or f"exit code {self.process.returncode if self.process else '?'}"

    # ------------------------------------------------------------------ polling
    def _poll(self) -> None:
        out = Path(self._spec["output_dir"])
        n_seen = -1
        while True:
            alive = self.running
            recs = read_metrics(out / "metrics.jsonl", since=self._t_start - 1)
            if len(recs) != n_seen:
                n_seen = len(recs)
                self.records = recs
                self._draw()
            elif alive:  # nothing new: the elapsed seconds of the start-up message still move
                self.status.value = " · ".join(self._status_parts(progress_of(self.records)))
            if not alive:
                break
            time.sleep(self.poll_interval)
        res_path = out / "train_result.json"
        if res_path.is_file() and res_path.stat().st_mtime >= self._t_start - 1:
            try:
                self.train_result = json.loads(res_path.read_text())
            except json.JSONDecodeError:
                self.train_result = None
        code = self.process.returncode
        if self._stop_requested:
            self.state, self.progress.bar_style = "stopped", "warning"
        elif code == 0 and (self.train_result or {}).get("status") != "failed":
            self.state, self.progress.bar_style = "done", "success"
        else:
            self.state, self.progress.bar_style = "failed", "danger"
        self._draw()
        self.start_button.disabled, self.stop_button.disabled = False, True

    def _draw(self) -> None:
        from ..viz import loss_figure, metric_figure

        p = progress_of(self.records)
        if p["max_iter"]:
            self.progress.max = max(1, int(p["max_iter"]))
        self.progress.value = min(p["iter"], self.progress.max)
        self.progress.description = f"{p['iter']}/{p['max_iter']} it" if p["max_iter"] else f"{p['iter']} it"
        set_figure(self.loss_out, loss_figure(self.records))
        set_figure(self.metric_out, metric_figure(self.records))
        self.status.value = " · ".join(self._status_parts(p))

    def _schedule(self) -> int | None:
        """The run's ``epochs_iters`` (in the family's unit)."""
        spec = getattr(self, "_spec", None) or self.spec()
        n = spec["train_kwargs"].get("epochs_iters")
        return int(n) if n else None

    def _progress_parts(self, p: dict, train: list[dict]) -> list[str]:
        """While running: the start-up message until the first training step is logged, then
        ``it / total``, seconds per step and the time left (and the epoch for epoch families)."""
        if not train:
            return [f"{STARTING} {time.time() - self._t_start:.0f} s"] if self._t_start else [STARTING]
        parts = []
        if self.unit == "epochs" and train[-1].get("epoch") is not None:
            total = self._schedule()
            parts.append(f"epoch {int(train[-1]['epoch'])}" + (f" / {total}" if total else ""))
        parts.append(f"{p['iter']} / {p['max_iter']} it" if p["max_iter"] else f"{p['iter']} it")
        if p["s_per_iter"]:
            parts.append(f"{p['s_per_iter']:.2f} s/it")
            if p["eta_s"] is not None:
                parts.append(f"ETA {_duration(p['eta_s'])}")
        return parts

    def _status_parts(self, p: dict) -> list[str]:
        train = [r for r in self.records if r.get("type") == "train"]
        evals = [r for r in self.records if r.get("type") == "eval"]
        res = self.train_result or {}
        parts = [self.state if not res.get("status") or res["status"] == self.state else
                 f"{self.state} ({res['status'].replace('_', ' ')})"]
        if self.state == "running":
            parts += self._progress_parts(p, train)
        elif train:
            parts.append(f"{p['iter']} / {p['max_iter']} it" if p["max_iter"] else f"{p['iter']} it")
        if train and train[-1].get("total_loss") is not None:
            parts.append(f"loss {train[-1]['total_loss']:.3f}")
        if evals and evals[-1].get("segm_AP") is not None:
            parts.append(f"val mask AP {evals[-1]['segm_AP']:.3f}")
        run_dir = getattr(self, "run_dir", None)
        if run_dir is not None and Path(self.output_dir.value).expanduser().resolve() != Path(run_dir).resolve():
            parts.append(f"in <code>{html.escape(Path(run_dir).name)}/</code>")  # output dir held another run
        if self.state == "failed":
            parts.append(f"<pre style='color:#b00'>{html.escape(self._failure())}</pre>")
        elif self._best_model():
            unit = res.get("unit", "iterations")
            best = res.get("best_epochs_iters")
            at = f" ({unit[:-1]} {best})" if best is not None else ""
            parts.append(f"best model{at}: <code>{html.escape(str(self._best_model()))}</code>")
        return parts

    def _best_model(self) -> str | None:
        """The best model of this run (not one a previous run left in the folder), or None."""
        res = self.train_result or {}
        if res.get("paths", {}).get("best_model") and (
            res.get("best_epochs_iters") is not None or res.get("status") in ("done", "stopped_early")
        ):
            return res["paths"]["best_model"]
        return None

    def summary(self) -> str:
        """The run in a few lines: status, steps done, the best validation AP and where the best and
        the last weights are (what the end of 04_train prints)."""
        res = self.train_result or {}
        status = res.get("status", self.state)
        lines = [f"status: {self.state}" + (f" ({status.replace('_', ' ')})" if status != self.state else "")]
        if getattr(self, "run_dir", None) is not None:
            lines.append(f"run folder: {self.run_dir}")
        unit = res.get("unit", self.unit)
        if res:
            lines.append(f"{unit}: {res.get('epochs_iters')} / {res.get('max_epochs_iters')} "
                         f"({res.get('iterations')} optimizer steps, {_duration(res.get('wall_time_s') or 0)})")
        elif self.records:
            lines.append(" · ".join(self._status_parts(progress_of(self.records))[1:]))
        best = res.get("best_metrics") or {}
        if best.get("segm_AP") is not None:
            box = f", box AP {best['bbox_AP']:.3f}" if best.get("bbox_AP") is not None else ""
            at = f" at {unit[:-1]} {res['best_epochs_iters']}" if res.get("best_epochs_iters") is not None else ""
            lines.append(f"best val mask AP {best['segm_AP']:.3f}{box}{at}")
        paths = res.get("paths", {})
        if self._best_model():
            lines.append(f"best weights: {self._best_model()}")
        last = next((paths[k] for k in ("model_final", "last_checkpoint") if paths.get(k) and Path(paths[k]).exists()),
                    None)
        if last:
            lines.append(f"last weights: {last}")
        if self.state == "failed":
            lines.append(f"error: {self._failure()}")
        return "\n".join(lines)

    def figures(self) -> dict:
        from ..viz import loss_figure, metric_figure

        return {"loss": loss_figure(self.records), "metrics": metric_figure(self.records)}

    def static_bundle(self) -> dict:
        """The status line and, once there are records, the loss and validation curves as HTML
        drawn by the ``plotly.min.js`` beside a batch-saved notebook (the saved copy's picture of
        the live charts; JupyterLab shows the widget instead)."""
        name = html.escape(self.model.value)
        body = f"<div class='wb-static'><b>{name}</b>: {self.status.value}</div>"
        if self.records:
            from ..viz.figures import figures_html

            key = f"train{id(self) % 1_000_000}"  # element ids unique per panel
            body += figures_html({f"{key}-{k}": json.loads(fig.to_json()) for k, fig in self.figures().items()})
        return {"text/html": body}
