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
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
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


def _run_all(page, base: str, nb_file: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/lab/tree/{nb_file}?token={TOKEN}&reset")
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt")
    n = prompts.count()
    assert n > 0
    deadline = time.time() + 300
    while time.time() < deadline:  # the status bar says Idle before anything ran: check every prompt
        texts = prompts.all_inner_texts()
        if all(t.strip().startswith("[") and t.strip()[1:-2].strip().isdigit() for t in texts):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"cells did not finish: {prompts.all_inner_texts()}")
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t.split("\n")[0]]
    assert not tracebacks, tracebacks[:2]


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
