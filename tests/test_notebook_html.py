"""Executed step notebooks read offline as nbconvert HTML (``jupyter nbconvert --to html``).

``run_notebook`` runs the kernel in batch mode: the panels' static pictures follow their widget
views as plain outputs (nbconvert's HTML would otherwise pick the widget view, empty without the
widget JavaScript from a CDN), progress bars are saved in their final state, and plotly figures
load the one ``plotly.min.js`` written beside the executed copies instead of embedding it.

Data steps (02 check, 03 split) on a small generated dataset, and 06 predict with an untrained
tiny Mask-RT-DETR-S (detections at score >= 0 still draw an overlay), each converted in-process
(about 30 s of CPU; marked slow like the other executed-notebook tests).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from workbench import notebooks as wbnb

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BUDGET = 1_500_000  # bytes, for each executed notebook and its HTML
SCRIPT_SRC = re.compile(r"<script[^>]*\ssrc=\"([^\"]+)\"")
BAR = re.compile(r"\|\s*(\d+)/(\d+) \[")  # tqdm's "...| 8/8 [00:01<00:00, ...]"
PNG_IMG = re.compile(r"<img[^>]*\ssrc=\"data:image/png;base64,[A-Za-z0-9+/=]{100,}\"")


def _html(nb) -> str:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def _outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """{name: (executed notebook path, its HTML written beside it as nbconvert would)}."""
    from workbench import create_model
    from workbench.data.synthetic import make_shapes_dataset

    root = tmp_path_factory.mktemp("nbhtml")
    data = root / "shapes"
    make_shapes_dataset(data, num_train=8, num_val=2, size=(96, 96), seed=3)
    out = root / "executed"
    paths = {
        "02_check_data": wbnb.run_notebook(NB_DIR / "02_check_data.ipynb", {
            "dataset_dir": str(data), "labelme_dir": None, "output_dir": str(root / "check"), "num_samples": 8}, out),
        "03_split": wbnb.run_notebook(NB_DIR / "03_split.ipynb", {"dataset_dir": str(data), "val_percent": 20}, out),
    }
    model_dir = root / "model"
    create_model("Mask-RT-DETR-S", device="cpu", class_names=["circle", "square"], input_size=96, num_queries=20,
                 num_decoder_layers=1, num_denoising=0, num_sample_points=256).save(model_dir / "model.pth")
    images = root / "to_predict"  # a folder: model.predict shows a bar for folders
    images.mkdir()
    for f in sorted((data / "images").glob("val_*.png")):
        shutil.copy(f, images)
    paths["06_predict"] = wbnb.run_notebook(NB_DIR / "06_predict.ipynb", {
        "model_name": "Mask-RT-DETR-S", "model_dir": str(model_dir), "inputs": str(images),
        "output_dir": str(root / "predict"), "threshold": 0.0, "keep_threshold": 0.0, "device": "cpu"}, out)
    done = {}
    for name, p in paths.items():
        html_path = p.with_suffix(".html")
        html_path.write_text(_html(nbformat.read(p, as_version=4)), encoding="utf-8")
        done[name] = (p, html_path)
    return done


NAMES = ["02_check_data", "03_split", "06_predict"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_sizes_within_budget_and_plotly_js_beside(executed, name):
    nb_path, html_path = executed[name]
    assert nb_path.stat().st_size < BUDGET, f"{name}.ipynb is {nb_path.stat().st_size / 1e6:.2f} MB"
    assert html_path.stat().st_size < BUDGET, f"{name}.html is {html_path.stat().st_size / 1e6:.2f} MB"
    js = nb_path.parent / "plotly.min.js"
    assert js.stat().st_size > 1_000_000, "one plotly.js beside the executed notebooks"
    html = html_path.read_text(encoding="utf-8")
    assert "plotly.min.js" in SCRIPT_SRC.findall(html), "figures load the plotly.js beside the page"
    for o in _outputs(nbformat.read(nb_path, as_version=4)):
        assert "cdn." not in str(o.get("data", {}).get("text/html", "")), f"{name}: an output loads from a CDN"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_content_needs_no_cdn_script(executed, name):
    """The only scripts from the network are the ones nbconvert's template adds to any notebook
    (MathJax, require.js, the widget manager): none comes from the outputs."""
    nb_path, html_path = executed[name]
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    template_only = {s for s in SCRIPT_SRC.findall(_html(nb)) if "://" in s}
    remote = {s for s in SCRIPT_SRC.findall(html_path.read_text(encoding="utf-8")) if "://" in s}
    assert remote <= template_only, f"{name}: scripts from the outputs: {sorted(remote - template_only)}"


@pytest.mark.slow
@pytest.mark.parametrize("name,widget_css", [
    ("02_check_data", "DatasetBrowser"), ("03_split", "DatasetBrowser"), ("06_predict", "PredictionExplorer")])
def test_static_pictures_in_html(executed, name, widget_css):
    nb_path, html_path = executed[name]
    nb = nbformat.read(nb_path, as_version=4)
    outs = list(_outputs(nb))
    views = [i for i, o in enumerate(outs) if WIDGET_VIEW in o.get("data", {}) and
             o["data"].get("text/plain", "").startswith(widget_css)]
    assert views, f"{name}: the {widget_css} widget view is kept (JupyterLab shows the live widget)"
    after = outs[views[-1] + 1:views[-1] + 3]
    assert any("image/png" in o.get("data", {}) for o in after), f"{name}: no static picture after the widget view"
    assert any("wb-static" in o.get("data", {}).get("text/html", "") for o in after), f"{name}: no static summary"
    html = html_path.read_text(encoding="utf-8")
    assert len(PNG_IMG.findall(html)) >= 1, f"{name}: no <img src=data:image/png> in the HTML"
    assert "wb-static" in html


@pytest.mark.slow
def test_step_panel_final_state_in_html(executed):
    html = executed["03_split"][1].read_text(encoding="utf-8")
    assert "done in" in html and "wb-split-table" in html, "the split panel's final status and summary"


@pytest.mark.slow
@pytest.mark.parametrize("name,text", [
    ("02_check_data", "render train samples: 100%"), ("02_check_data", "8/8"), ("06_predict", "2/2")])
def test_progress_bars_saved_finished(executed, name, text):
    nb_path, html_path = executed[name]
    bars = [m for o in _outputs(nbformat.read(nb_path, as_version=4))
            for m in BAR.findall(o.get("data", {}).get("text/plain", ""))]
    assert bars and all(done == total for done, total in bars), f"{name}: bars saved unfinished: {bars}"
    assert text in html_path.read_text(encoding="utf-8")


# ----------------------------------------------------------------------- in-process, no kernel
def test_interactive_display_unchanged(monkeypatch, tmp_path):
    """Outside batch mode a panel is displayed as before: one bundle, the widget view with the
    static picture beside it, and no ``_ipython_display_`` of its own."""
    from workbench.data.synthetic import make_shapes_dataset
    from workbench.widgets import DatasetBrowser

    monkeypatch.delenv("WORKBENCH_BATCH", raising=False)
    make_shapes_dataset(tmp_path, num_train=2, num_val=1, size=(64, 64), seed=1)
    b = DatasetBrowser(tmp_path)
    assert b._ipython_display_ is None
    data = b._repr_mimebundle_()
    assert {WIDGET_VIEW, "image/png", "text/html"} <= set(data)
    monkeypatch.setenv("WORKBENCH_BATCH", "1")
    assert callable(b._ipython_display_)
    outs = b.static_outputs()
    assert [set(o) for o in outs] == [{"text/html"}, {"image/png", "text/plain"}]
    assert outs[1]["image/png"] == data["image/png"] and data["image/png"] not in outs[0]["text/html"]


def test_static_outputs_keep_their_number():
    from workbench.widgets.common import _fit_outputs

    html, png = {"text/html": "<div class='wb-static'>x</div>"}, {"image/png": "AAAA", "text/plain": "<static picture>"}
    assert _fit_outputs([html], 2) == [html, {"text/plain": ""}]
    merged = _fit_outputs([html, png], 1)
    assert len(merged) == 1 and merged[0]["image/png"] == "AAAA"
    assert "x</div>" in merged[0]["text/html"] and "base64,AAAA" in merged[0]["text/html"]


def test_large_static_png_stored_with_a_palette():
    import base64

    import cv2
    import numpy as np

    from workbench.widgets.common import compact_png_b64, png_b64

    photo = cv2.imread(str(REPO / "data" / "demo_labelme" / "arc2017_left.jpg"))[:, :, ::-1].copy()
    big = png_b64(photo)
    small = compact_png_b64(big)
    assert len(big) > 200_000 and len(small) < len(big) / 3
    back = cv2.imdecode(np.frombuffer(base64.b64decode(small), np.uint8), cv2.IMREAD_COLOR)
    assert back.shape == photo.shape and np.abs(back[:, :, ::-1].astype(int) - photo).mean() < 8
    assert compact_png_b64(png_b64(photo[:32, :32])) == png_b64(photo[:32, :32])  # small ones unchanged
