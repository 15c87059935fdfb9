"""A person's view: JupyterLab in headless Chromium, Run All, then use the widgets.

JupyterLab is served on 127.0.0.1 from a temporary root holding a copy of a step notebook (with
its parameters injected, pointing at a small generated dataset). Playwright drives Debian's
``/usr/bin/chromium``; ``playwright install`` is never needed. Before/after screenshots of the
overlay are saved under ``$WORKBENCH_TEST_ARTIFACTS`` (default ``test-artifacts/browser``).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("WORKBENCH_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
TOKEN = "workbench-browser-test"
WIDTH = 1200  # the window width the layout must fit without horizontal overflow
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server: (base_url, root_dir). Stopped with SIGTERM afterwards."""
    pytest.importorskip("playwright.sync_api")
    pytest.importorskip("jupyterlab")
    tmp = tmp_path_factory.mktemp("lab")
    root, cfg = tmp / "root", tmp / "config"
    root.mkdir()
    settings = cfg / "settings"
    for plugin, value in {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                          {"fetchNews": "false", "checkForUpdates": False},
                          "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"}}.items():
        p = settings / plugin
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(value))
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(cfg / "jupyter"), JUPYTER_RUNTIME_DIR=str(cfg / "runtime"),
               IPYTHONDIR=str(cfg / "ipython"), PYTHONPATH=os.pathsep.join(
                   [str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
         "--allow-root", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={cfg / 'workspaces'}"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if proc.poll() is not None:
                raise RuntimeError(f"jupyterlab exited: {(tmp / 'jupyterlab.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("jupyterlab did not answer within 60 s")
        yield base, root
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def page():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=120_000)  # its own timeout; 5 s flakes under CPU load
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": WIDTH, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(120_000)
        try:
            yield pg
        finally:
            context.close()
            browser.close()


def _prepare_notebook(root: Path, name: str, parameters: dict) -> str:
    import nbformat

    from workbench.notebooks import NOTEBOOK_DIR, inject_parameters

    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    inject_parameters(nb, parameters)
    nbformat.write(nb, root / f"{name}.ipynb")
    return f"{name}.ipynb"


def _start_run_all(page, base: str, nb_file: str):
    """Open the notebook and choose Run → Run All Cells; returns the code cells' prompt locator."""
    from playwright.sync_api import expect

    page.goto(f"{base}/lab/tree/{nb_file}?token={TOKEN}&reset")
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt")
    assert prompts.count() > 0
    return prompts


def _executed(prompt_text: str) -> bool:
    t = prompt_text.strip()
    return t.startswith("[") and t[1:-2].strip().isdigit()


def _wait_prompts(prompts, done, timeout: float = 300) -> list[str]:
    """Poll the prompts until ``done(texts)``; the status bar says Idle before anything ran."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        texts = prompts.all_inner_texts()
        if done(texts):
            return texts
        time.sleep(0.5)
    raise AssertionError(f"cells did not settle: {prompts.all_inner_texts()}")


def _run_all(page, base: str, nb_file: str) -> None:
    prompts = _start_run_all(page, base, nb_file)
    _wait_prompts(prompts, lambda texts: all(_executed(t) for t in texts))
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t.split("\n")[0]]
    assert not tracebacks, tracebacks[:2]


_OVERFLOW_JS = """() => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  const outer = nb.closest('.jp-WindowedPanel-outer') || nb;
  const right = outer.getBoundingClientRect().right;
  const bad = [];
  for (const el of nb.querySelectorAll(
      '.jp-OutputArea-output, .widget-box, .widget-image, .js-plotly-plot, .jp-RenderedHTMLCommon table')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > right + 1) bad.push(`${el.className.toString().slice(0, 80)} right=${Math.round(r.right)}`);
  }
  return {scrollWidth: outer.scrollWidth, clientWidth: outer.clientWidth, right: Math.round(right), bad: bad};
}"""


def _assert_no_horizontal_overflow(page) -> dict:
    """Measured from the DOM: the notebook does not scroll sideways and no output sticks out of it."""
    m = page.evaluate(_OVERFLOW_JS)
    assert m["scrollWidth"] <= m["clientWidth"] + 1 and not m["bad"], m
    return m


def _wait_src_change(img, old: str, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        src = img.get_attribute("src")
        if src and src != old:
            return src
        time.sleep(0.2)
    raise AssertionError("the overlay image did not change")


def test_dataset_browser_in_jupyterlab(lab, page, tmp_path):
    from playwright.sync_api import expect

    from workbench.data.synthetic import make_shapes_dataset

    base, root = lab
    data = root / "shapes"
    make_shapes_dataset(data, num_train=6, num_val=3, size=(160, 160), seed=5, classes=("circle", "square"))
    nb_file = _prepare_notebook(root, "02_check_data", {"dataset_dir": str(data), "labelme_dir": None,
                                                        "output_dir": str(tmp_path / "check"), "num_samples": 2})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _run_all(page, base, nb_file)

    browser = page.locator(".wb-dataset-browser").first
    expect(browser).to_be_visible()
    expect(page.locator(".js-plotly-plot .main-svg").first).to_be_visible()  # the statistics figures
    img = browser.locator(".wb-overlay")
    expect(img).to_have_attribute("src", re.compile("^blob:"))
    # pick an image with both classes through the dropdown, as a person would
    from workbench.data.dataset import Dataset

    ds = Dataset.load_paddlex(data, "train")
    names = {c.id: c.name for c in ds.categories}
    idx = next(i for i, (im, insts) in enumerate(ds.iter_images())
               if {"circle", "square"} <= {names[a.category_id] for a in insts})
    src0 = img.get_attribute("src")
    browser.locator(".wb-image-dropdown select").select_option(index=idx)
    if idx:
        src0 = _wait_src_change(img, src0)
    expect(browser.locator(".wb-image-info")).to_contain_text(Path(ds.images[idx].file_name).name)
    img.scroll_into_view_if_needed()
    img.screenshot(path=str(ARTIFACTS / "01_browser_before.png"))
    shot_before = img.screenshot()

    # un-tick one class
    browser.locator(".wb-class-square input[type=checkbox]").uncheck()
    src1 = _wait_src_change(img, src0)
    expect(browser.locator(".wb-image-info")).to_contain_text("instance(s) shown")
    time.sleep(0.5)
    img.screenshot(path=str(ARTIFACTS / "01_browser_class_off.png"))
    assert img.screenshot() != shot_before

    # drag the opacity slider to the right end
    slider = browser.locator(".wb-opacity")
    handle, base_bar = slider.locator(".noUi-handle"), slider.locator(".noUi-base")
    slider.scroll_into_view_if_needed()
    hb, bb = handle.bounding_box(), base_bar.bounding_box()
    page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    page.mouse.down()
    page.mouse.move(bb["x"] + bb["width"] - 1, hb["y"] + hb["height"] / 2, steps=8)
    page.mouse.up()
    expect(slider.locator(".widget-readout")).to_have_text("1.00")
    _wait_src_change(img, src1)
    time.sleep(0.5)
    img.screenshot(path=str(ARTIFACTS / "01_browser_opacity_1.png"))


def test_failing_convert_shows_red_and_stops_the_notebook(lab, page):
    """01 with a LabelMe folder that does not exist: the panel turns red with the reason at the top,
    the traceback is folded, the cell ends with one line, and the cells after it do not run."""
    from playwright.sync_api import expect

    base, root = lab
    missing = root / "no_such_labelme_dir"
    nb_file = _prepare_notebook(root, "01_convert_labelme", {"labelme_dir": str(missing),
                                                             "dataset_dir": str(root / "never_written")})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    prompts = _start_run_all(page, base, nb_file)
    panel = page.locator(".wb-convert-panel").first
    expect(panel.locator(".wb-status")).to_contain_text("failed", timeout=120_000)
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle")
    texts = _wait_prompts(prompts, lambda t: sum(map(_executed, t)) >= 3, timeout=60)
    time.sleep(2)  # nothing else may start: Run All stops at the failing cell
    texts = prompts.all_inner_texts()
    failing = next(i for i, c in enumerate(page.locator(".jp-Notebook .jp-CodeCell").all())
                   if c.locator(".wb-convert-panel").count())
    assert all(_executed(t) for t in texts[:failing + 1]), texts
    assert not any(_executed(t) for t in texts[failing + 1:]), texts  # later cells were not executed
    status = panel.locator(".wb-status")
    expect(status).to_be_visible()
    expect(status).to_contain_text("no_such_labelme_dir")
    assert panel.locator(".wb-progress .progress-bar-danger").count() == 1  # the bar is red
    trace = panel.locator("details.wb-trace")
    assert trace.count() == 1 and trace.get_attribute("open") is None  # folded
    cell_err = page.locator(".jp-CodeCell").nth(failing).locator(".jp-OutputArea-output[data-mime-type="
                                                                 "'application/vnd.jupyter.stderr']")
    err_text = "\n".join(cell_err.all_inner_texts())
    assert "ConvertPanel failed" in err_text and "Traceback" not in err_text, err_text
    assert not (root / "never_written").exists()
    _assert_no_horizontal_overflow(page)
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(ARTIFACTS / "02_convert_failed.png"))


def _drag_slider_to(page, slider, fraction: float) -> None:
    handle, bar = slider.locator(".noUi-handle"), slider.locator(".noUi-base")
    slider.scroll_into_view_if_needed()
    hb, bb = handle.bounding_box(), bar.bounding_box()
    y = hb["y"] + hb["height"] / 2
    page.mouse.move(hb["x"] + hb["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(bb["x"] + bb["width"] * fraction, y, steps=8)
    page.mouse.up()


def test_prediction_slider_and_save_in_jupyterlab(lab, page):
    """06 with a small (untrained) model: the score slider changes the overlay, and Save writes a
    new, named JSON while the JSON the notebook wrote stays byte for byte as it was."""
    import hashlib

    from playwright.sync_api import expect

    from workbench import create_model
    from workbench.data.synthetic import make_shapes_dataset

    base, root = lab
    data = root / "pred_data"
    make_shapes_dataset(data, num_train=0, num_val=2, size=(160, 160), seed=2, classes=("circle", "square"))
    model_dir = root / "pred_run" / "best_model"
    m = create_model("Mask-RT-DETR-S", device="cpu", class_names=["circle", "square"], input_size=96,
                     num_queries=20, num_decoder_layers=1, num_denoising=0, num_sample_points=256)
    m.save(model_dir / "model.pth")
    out = root / "pred_out"
    images = sorted(str(p) for p in (data / "images").glob("*.png"))
    nb_file = _prepare_notebook(root, "06_predict", {
        "model_name": "Mask-RT-DETR-S", "model_dir": str(model_dir), "inputs": images, "output_dir": str(out),
        "threshold": 0.0, "mask_threshold": 0.5, "keep_threshold": 0.0, "device": "cpu"})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _run_all(page, base, nb_file)

    explorer = page.locator(".wb-prediction-explorer").first
    expect(explorer).to_be_visible()
    img = explorer.locator(".wb-overlay")
    expect(img).to_have_attribute("src", re.compile("^blob:"))
    _assert_no_horizontal_overflow(page)
    img.scroll_into_view_if_needed()
    explorer.screenshot(path=str(ARTIFACTS / "06_predict_before.png"))
    shot0, src0 = img.screenshot(), img.get_attribute("src")

    written = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*.json")}
    assert written, "the notebook wrote its JSON results"
    slider = explorer.locator(".wb-score-threshold")
    _drag_slider_to(page, slider, 0.97)
    expect(slider.locator(".widget-readout")).not_to_have_text("0.00")
    shown = slider.locator(".widget-readout").inner_text()
    _wait_src_change(img, src0)
    time.sleep(0.5)
    assert img.screenshot() != shot0
    explorer.screenshot(path=str(ARTIFACTS / "06_predict_threshold.png"))

    explorer.locator(".wb-save-json button, button.wb-save-json").first.click()
    deadline = time.time() + 60
    new = []
    while time.time() < deadline and not new:
        new = [p for p in out.rglob("*.json") if p not in written]
        time.sleep(0.3)
    assert len(new) == 1, new
    saved = json.loads(new[0].read_text())
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in written} == written  # originals unchanged
    assert saved["threshold"] == round(float(shown), 2)  # the slider's value, as shown (no 0.8500000000000001)
    expect(explorer).to_contain_text(new[0].name)  # the explorer says where it saved
    explorer.screenshot(path=str(ARTIFACTS / "06_predict_saved.png"))


def test_stop_in_training_panel(lab, page):
    """04 started by Run All, then Stop pressed in the panel while it trains: the run ends as
    "stopped" (panel and train_result.json), later cells run, and no path of the previous run in
    the same output folder is shown."""
    from playwright.sync_api import expect

    from workbench.data.synthetic import make_shapes_dataset

    base, root = lab
    data = root / "train_data"
    make_shapes_dataset(data, num_train=4, num_val=2, size=(96, 96), seed=4)
    out = root / "train_out"
    # a finished earlier run in the same output folder, whose paths must not be shown for this one
    (out / "best_model").mkdir(parents=True)
    (out / "best_model" / "model.pth").write_bytes(b"earlier run")
    (out / "train_result.json").write_text(json.dumps({"status": "done", "iterations": 3,
                                                       "paths": {"best_model": str(out / "best_model")}}))
    nb_file = _prepare_notebook(root, "04_train", {
        "dataset_dir": str(data), "output_dir": str(out), "model_name": "MaskRCNN-ResNet50-FPN",
        "epochs_iters": 100000, "batch_size": 1, "input_size": 96, "device": "cpu",
        "model_options": {"depth": 18}, "train_options": {"eval_interval": 100000, "log_interval": 1}})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    prompts = _start_run_all(page, base, nb_file)
    panel = page.locator(".wb-training-panel").first
    expect(panel).to_be_visible()
    progress = panel.locator(".wb-progress .widget-label, .wb-progress label").first
    deadline = time.time() + 240
    while time.time() < deadline:  # until training reports its first iterations
        label = progress.inner_text() if progress.count() else ""
        if re.search(r"\b[1-9]\d*\s*/", label) or re.search(r"^[1-9]\d* it", label):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"training did not start: {panel.inner_text()[:500]}")
    _assert_no_horizontal_overflow(page)
    panel.screenshot(path=str(ARTIFACTS / "04_train_running.png"))
    panel.locator(".wb-stop button, button.wb-stop").first.click()
    expect(panel.locator(".wb-status")).to_contain_text("stopped", timeout=120_000)
    _wait_prompts(prompts, lambda texts: all(_executed(t) for t in texts), timeout=180)
    text = panel.inner_text()
    assert str(out / "best_model") not in text and "earlier run" not in text, text
    results = [json.loads(p.read_text()) for p in root.rglob("train_result.json") if p != out / "train_result.json"]
    results += [json.loads((out / "train_result.json").read_text())]
    assert "stopped" in [r.get("status") for r in results], results
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(ARTIFACTS / "04_train_stopped.png"))
