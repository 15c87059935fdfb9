"""The data step panels: options, a Run button, a progress bar, a log and a summary."""
from __future__ import annotations

import hashlib
import html
import time
import traceback
from pathlib import Path

from .common import StaticFallback, W, error_html, styled, table_html


class _StepPanel(StaticFallback, W.VBox):
    """Options, a Run button, a progress bar, a log and a result summary."""

    css = "wb-step-panel"

    def __init__(self, options: list, **kwargs):
        self.run_button = styled(W.Button(description="Run", button_style="primary", icon="play"), "wb-run")
        self.progress = styled(W.IntProgress(value=0, min=0, max=1, description="", bar_style=""), "wb-progress")
        self.status = styled(W.HTML(), "wb-status")
        self.log_output = styled(W.Output(layout=W.Layout(max_height="240px", overflow="auto")), "wb-log")
        self.summary = styled(W.HTML(), "wb-summary")
        self.error: BaseException | None = None
        super().__init__([*options, W.HBox([self.run_button, self.progress, self.status]), self.log_output,
                          self.summary], **kwargs)
        self.add_class(self.css)
        self.run_button.on_click(lambda _b: self.run(raise_errors=False))

    def _steps(self):  # pragma: no cover - overridden: yields (done, total, text) while working
        raise NotImplementedError

    def run(self, raise_errors: bool = True):
        """Do the step with the current options (what the Run button does)."""
        self.error = None
        self.result = None
        self.run_button.disabled = True
        self.progress.bar_style = "info"
        self.progress.value = 0
        self.log_output.clear_output()
        t0 = time.time()
        try:
            # caught inside the ``with``: in a kernel ``Output.__exit__`` swallows what leaves it
            with self.log_output:
                try:
                    for done, total, text in self._steps():
                        self.progress.max = total
                        self.progress.value = done
                        self.status.value = html.escape(text)
                except Exception as e:
                    self.error = e
            if self.error is None:
                self.progress.value = self.progress.max
                self.progress.bar_style = "success"
                self.status.value = f"done in {time.time() - t0:.1f} s"
                return self.result
            e = self.error
            self.progress.value = self.progress.max
            self.progress.bar_style = "danger"
            trace = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            self.status.value = error_html(f"failed: {_one_line(e)}")
            self.summary.value = (f"<details class='wb-trace'><summary>details (traceback)</summary>"
                                  f"<pre>{html.escape(trace)}</pre></details>")
            if raise_errors:
                # in a notebook the cell stops here with one line (the panel above shows the trace);
                # IPython prints ``_render_traceback_()`` instead of the traceback when it exists
                try:
                    e._render_traceback_ = lambda: [f"{type(self).__name__} failed: {_one_line(e)} "
                                                    "(the traceback is under 'details' in the panel)"]
                except AttributeError:  # an exception type without a __dict__
                    pass
                raise e
            return None
        finally:
            self.run_button.disabled = False

    def static_bundle(self) -> dict:
        return {"text/html": f"<div class='wb-static'>{self.status.value}{self.summary.value}</div>"}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _path_text(value, description: str, css: str, placeholder: str = "") -> W.Text:
    return styled(W.Text(value=str(value or ""), description=description, placeholder=placeholder,
                         layout=W.Layout(width="520px")), css)


def _seed(seed: int) -> W.IntText:
    return styled(W.IntText(value=int(seed), description="seed", layout=W.Layout(width="160px")), "wb-seed")


class ConvertPanel(_StepPanel):
    """LabelMe folder -> PaddleX COCO layout (``workbench.convert_labelme``).

    The first Run keeps the destination's earlier files as ``.bak``; running again in the same panel
    replaces the files this panel wrote (while they are unchanged) without stacking ``.bak1``,
    ``.bak2``… of them (``convert_labelme(own_files=...)``)."""

    css = "wb-convert-panel"

    def __init__(self, src_dir: str = "", dst_dir: str = "", labels: str | None = None,
                 label_order: str = "sorted", val_percent: float = 20, seed: int = 0, **kwargs):
        self.src = _path_text(src_dir, "LabelMe dir", "wb-src-dir")
        self.dst = _path_text(dst_dir, "dataset dir", "wb-dst-dir", "(in place)")
        self.labels = _path_text(labels, "labels.txt", "wb-labels", "(auto)")
        self.label_order = styled(W.Dropdown(options=["sorted", "stable"], value=label_order,
                                             description="label order"), "wb-label-order")
        self.val_percent = styled(W.FloatSlider(min=0, max=90, step=5, value=float(val_percent),
                                                description="val %"), "wb-val-percent")
        self.seed = _seed(seed)
        self.result = None
        self.written: dict[Path, str] = {}  # what this panel's runs wrote (path -> SHA-256)
        super().__init__([self.src, self.dst, self.labels, W.HBox([self.label_order, self.val_percent, self.seed])],
                         **kwargs)

    def _steps(self):
        from ..data.labelme import convert_labelme, find_labelme_files

        src = Path(self.src.value).expanduser()
        files = find_labelme_files(src) if src.is_dir() else []
        yield 0, 2, f"converting {len(files)} LabelMe file(s)"
        self.result = convert_labelme(src, self.dst.value or None, labels=self.labels.value or None,
                                      label_order=self.label_order.value, val_percent=self.val_percent.value,
                                      seed=self.seed.value, own_files=self.written)
        self.written.update(self.result.written)
        yield 1, 2, "summarising"
        self.summary.value = conversion_summary_html(self.result.summary)
        yield 2, 2, "done"


def conversion_summary_html(s: dict) -> str:
    cats = table_html([(c["id"], c["name"], s["class_counts"].get(c["name"], 0),
                        s["splits"]["train"]["class_counts"].get(c["name"], 0),
                        s["splits"]["val"]["class_counts"].get(c["name"], 0)) for c in s["categories"]],
                      ["category id", "name", "instances", "train", "val"], "wb-category-table")
    skipped = s.get("skipped_shapes") or []
    sk = ""
    if skipped:
        lis = "".join(f"<li>{html.escape(Path(x['file']).name)}: shape {x['shape_index']} "
                      f"({html.escape(str(x['label']))}, {x['shape_type']}): {html.escape(x['reason'])}</li>"
                      for x in skipped[:20])
        sk = f"<p style='color:#a60'><b>{len(skipped)} shape(s) skipped</b><ul>{lis}</ul></p>"
    return (f"<p><b>{s['images']}</b> images, <b>{s['instances']}</b> instances "
            f"({s.get('multi_part_instances', 0)} multi-part, {s.get('crowd_instances', 0)} crowd, "
            f"{s.get('ignored_shapes', 0)} ignored shapes) → <code>{html.escape(s['dst_dir'])}</code><br>"
            f"train: {s['splits']['train']['images']} images, val: {s['splits']['val']['images']} images; "
            f"labels from: {html.escape(str(s.get('label_source')))}</p>{_notes_html(_conversion_notes(s))}"
            f"{cats}{sk}")


def _conversion_notes(s: dict) -> list[str]:
    """What the options did not do as shown: a labels file overriding the label order, and a val
    split of another size than the percentage asked for."""
    from ..data.split import val_count_note

    notes = []
    src = str(s.get("label_source"))
    if src not in ("sorted", "stable", "list", "None"):
        notes.append(f"class ids follow the order of {Path(src).name} ({src}); the label-order option only "
                     "applies without a labels file")
    if s.get("val_percent") is not None:
        notes.append(val_count_note(s["images"], s["splits"]["val"]["images"], float(s["val_percent"])))
    return [n for n in notes if n]


def _notes_html(notes: list[str]) -> str:
    lis = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"<ul class='wb-notes' style='color:#a60'>{lis}</ul>" if notes else ""


class SplitPanel(_StepPanel):
    """Re-split train/val (``workbench.split_dataset``). The first Run keeps the old annotation files
    as ``.bak``; running again in the same panel does not stack ``.bak1``, ``.bak2``… of its own files."""

    css = "wb-split-panel"

    def __init__(self, dataset_dir: str = "", val_percent: float = 20, seed: int = 0, **kwargs):
        self.dataset_dir = _path_text(dataset_dir, "dataset dir", "wb-dataset-dir")
        self.val_percent = styled(W.FloatSlider(min=5, max=95, step=5, value=float(val_percent),
                                                description="val %"), "wb-val-percent")
        self.seed = _seed(seed)
        self.result = None
        self.written: dict[Path, str] = {}  # the annotation files this panel wrote (path -> SHA-256)
        super().__init__([self.dataset_dir, W.HBox([self.val_percent, self.seed])], **kwargs)

    def _steps(self):
        from ..data.split import split_dataset

        yield 0, 2, "splitting"
        v = float(self.val_percent.value)
        self.result = split_dataset(self.dataset_dir.value, 100 - v, v, seed=int(self.seed.value),
                                    own_files=self.written)
        from ..data.dataset import ANNOTATION_FILES

        for split in self.result:  # what this run wrote: replaced again without another .bak
            f = Path(self.dataset_dir.value) / "annotations" / ANNOTATION_FILES[split]
            self.written[f] = hashlib.sha256(f.read_bytes()).hexdigest()
        yield 1, 2, "summarising"
        self.summary.value = split_summary_html(self.result, v)
        yield 2, 2, "done"


def split_summary_html(parts: dict, val_percent: float | None = None) -> str:
    names: list[str] = []
    for ds in parts.values():
        names += [n for n in ds.category_names if n not in names]
    counts = {s: ds.class_counts() for s, ds in parts.items()}
    rows = [("images", *[len(ds.images) for ds in parts.values()]),
            ("instances", *[len(ds.instances) for ds in parts.values()])]
    rows += [(n, *[counts[s].get(n, 0) for s in parts]) for n in names]
    notes = []
    if val_percent and "val" in parts:
        from ..data.split import val_count_note

        total = sum(len(ds.images) for ds in parts.values())
        notes = [n for n in [val_count_note(total, len(parts["val"].images), float(val_percent))] if n]
    return _notes_html(notes) + table_html(rows, ["", *parts], "wb-split-table")
