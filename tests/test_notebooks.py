"""The step notebooks: clean in the repo, and executed headless they run without error cells and
keep their overlays (image/png) and plotly figures in the saved outputs.

Data steps (02 convert, 01 check, 03 split) run on a copy of the real demo data; train, evaluate
and predict (04-06) on a small generated dataset with a small network (ResNet-18 depth, 128 px,
2 iterations), because CPU training on the demo data takes minutes per iteration here.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from workbench import notebooks as wbnb

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
STEPS = wbnb.STEP_NOTEBOOKS
PLOTLY = "application/vnd.plotly.v1+json"


def _read(name: str):
    return nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)


def _outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def _mimetypes(nb) -> set[str]:
    return {k for o in _outputs(nb) for k in o.get("data", {})}


def _figures(nb):
    """Plotly figures of the saved notebook: cell outputs, and the charts a panel draws live (each
    chart shown once), kept in the saved widget state of its ``Output`` widgets."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    widget_outputs = [o for m in state.values() if m.get("model_name") == "OutputModel"
                      for o in m.get("state", {}).get("outputs", [])]
    for o in [*_outputs(nb), *widget_outputs]:
        if PLOTLY in o.get("data", {}):
            yield o["data"][PLOTLY]


# ----------------------------------------------------------------------- the files as committed
@pytest.mark.parametrize("name", STEPS)
def test_notebook_committed_clean(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"  # no "select kernel" dialog
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0].cell_type == "code"
    assert nb.cells.index(params[0]) == 1, "the parameters cell comes right after the introduction"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: committed with outputs"
            assert cell.execution_count is None, f"{name}: committed with execution counts"
    assert "widgets" not in nb.metadata, f"{name}: committed with widget state"


@pytest.mark.parametrize("name", STEPS)
def test_notebook_is_short(name):
    lines = [ln for c in _read(name).cells if c.cell_type == "code"
             for ln in c.source.splitlines() if ln.strip()]
    assert len(lines) < 40, f"{name} has {len(lines)} code lines; logic belongs in workbench/"


def test_parameter_injection():
    nb = _read("04_train")
    assert {"dataset_dir", "model_name", "output_dir", "epochs_iters"} <= set(wbnb.parameter_names(nb))
    wbnb.inject_parameters(nb, {"epochs_iters": 3, "model_options": {"depth": 18}, "dataset_dir": Path("/x")})
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nb.cells[i + 1]
    assert injected.metadata["tags"] == ["injected-parameters"]
    ns: dict = {}
    exec(injected.source, ns)
    assert ns["epochs_iters"] == 3 and ns["model_options"] == {"depth": 18} and ns["dataset_dir"] == "/x"
    wbnb.inject_parameters(nb, {"epochs_iters": 4})  # replaces, never stacks
    assert sum("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    with pytest.raises(ValueError, match="unknown parameter"):
        wbnb.inject_parameters(nb, {"epoch_iters": 3})
    assert wbnb.parse_parameters(["a=3", "b=0.5", "c=hello", "d=None", "e=[1, 2]", "f={'depth': 18}"]) == {
        "a": 3, "b": 0.5, "c": "hello", "d": None, "e": [1, 2], "f": {"depth": 18}}
    with pytest.raises(ValueError):
        wbnb.parse_parameters(["no-equals"])


# ----------------------------------------------------------------------- executed
@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Run all six notebooks once; {name: executed notebook}."""
    from workbench.data.synthetic import make_shapes_dataset

    out = tmp_path_factory.mktemp("notebooks")
    # run from copies in a folder other than notebooks/ (they must not depend on where they are)
    nb_dir = out / "elsewhere" / "deeper"
    nb_dir.mkdir(parents=True)
    for f in NB_DIR.glob("*.ipynb"):
        shutil.copy(f, nb_dir)
    done: dict[str, Path] = {}
    # data steps on the real demo data (a copy)
    done.update(wbnb.run_all_notebooks(out / "demo", notebooks=["01_convert_labelme", "02_check_data", "03_split"],
                                       notebook_dir=nb_dir, verbose=False))
    # train/evaluate/predict on small generated data, through the command line entry point
    data = out / "shapes"
    make_shapes_dataset(data, num_train=6, num_val=2, size=(96, 96), seed=3)
    train, nbs = out / "train", out / "executed"
    rc = wbnb.main([str(nb_dir / "04_train.ipynb"), "--output-dir", str(nbs),
                    "-p", f"dataset_dir={data}", "-p", f"output_dir={train}",
                    "-p", "epochs_iters=2", "-p", "batch_size=1", "-p", "input_size=128",
                    "-p", "model_options={'depth': 18}", "-p", "train_options={'eval_interval': 2, 'log_interval': 1}"])
    assert rc == 0
    done["04_train"] = nbs / "04_train.ipynb"
    best = str(train / "best_model")
    done["05_evaluate"] = wbnb.run_notebook(nb_dir / "05_evaluate.ipynb", {
        "dataset_dir": str(data), "model_dir": best, "output_dir": str(out / "evaluate")}, nbs)
    val_images = sorted(str(p) for p in (data / "images").glob("val_*.png"))
    done["06_predict"] = wbnb.run_notebook(nb_dir / "06_predict.ipynb", {
        "model_dir": best, "inputs": val_images, "output_dir": str(out / "predict")}, nbs)
    return {"dir": out, "train": train, **{k: nbformat.read(v, as_version=4) for k, v in done.items()}}


@pytest.mark.slow
@pytest.mark.parametrize("name", STEPS)
def test_executed_without_errors(executed, name):
    nb = executed[name]
    errors = [o for o in _outputs(nb) if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}" if errors else ""
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"], "widget state saved"


@pytest.mark.slow
@pytest.mark.parametrize("name,png,plotly", [
    ("02_check_data", True, True), ("01_convert_labelme", True, True), ("03_split", True, True),
    ("04_train", False, True), ("05_evaluate", True, True), ("06_predict", True, True)])
def test_executed_outputs_keep_overlays_and_figures(executed, name, png, plotly):
    types = _mimetypes(executed[name])
    if png:
        assert "image/png" in types, f"{name}: no overlay image in the outputs"
    if plotly:
        assert next(_figures(executed[name]), None), f"{name}: no plotly figure in the outputs"


@pytest.mark.slow
def test_train_notebook_writes_its_files(executed):
    train = executed["train"]
    for f in ("train_result.json", "metrics.jsonl", "best_model/model.pth"):
        assert (train / f).is_file(), f
    res = json.loads((train / "train_result.json").read_text())
    assert res["status"] == "done" and res["iterations"] == 2 and res["unit"] == "iterations"
    assert res["epochs_iters"] == res["max_epochs_iters"] == 2 and res["best_epochs_iters"] == 2
    recs = [json.loads(x) for x in (train / "metrics.jsonl").read_text().splitlines()]
    assert {r["type"] for r in recs} == {"train", "eval"}
    # the loss curve in the saved notebook holds the losses of metrics.jsonl
    figs = list(_figures(executed["04_train"]))
    loss = next(f for f in figs if f["layout"]["title"]["text"] == "Loss")
    total = next(t for t in loss["data"] if t["name"] == "total_loss")
    assert list(total["y"]) == pytest.approx([r["total_loss"] for r in recs if r["type"] == "train"])
    injected = [c for c in executed["04_train"].cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "epochs_iters = 2" in injected[0].source
    # offline (nbconvert HTML, no widgets) the panel's saved picture draws the same curves
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter().from_notebook_node(executed["04_train"])
    page = re.sub(r'<script type="application/vnd.jupyter.widget-state\+json">.*?</script>', "", page, flags=re.S)
    assert page.count("Plotly.newPlot") >= 1 and '"total_loss"' in page and 'src="plotly.min.js"' in page
    assert (executed["dir"] / "evaluate" / "evaluate_result.json").is_file()
    assert list((executed["dir"] / "predict").glob("*_res.json")) and list((executed["dir"] / "predict").glob("*_res.png"))


def _error_text(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    errors = [o for o in _outputs(nb) if o.output_type == "error"]
    return "\n".join(errors[0].get("traceback", [])) if errors else ""


def _family_cases():
    """One case per registered family, from its registered smoke configuration (a later family joins
    by registering)."""
    from workbench.models import families, family_info

    cases = []
    for fam, names in sorted(families().items()):
        info = family_info(names[0])
        name = info.smoke.get("name", names[0])
        model = dict(info.smoke.get("model", {}))
        train = dict(info.smoke.get("train", {}))
        params = {"epochs_iters": train.pop("epochs_iters"), "batch_size": train.pop("batch_size"),
                  "input_size": model.pop("input_size"), "model_options": model, "train_options": train}
        cases.append(pytest.param(name, info.unit, params, id=fam))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("model_name,unit,params", _family_cases())
def test_train_notebook_runs_for_each_family(tmp_path, model_name, unit, params):
    """04_train headless to the end for both families: one panel, one train_result.json schema."""
    from workbench.data.synthetic import make_shapes_dataset

    data, train = tmp_path / "shapes", tmp_path / "train"
    make_shapes_dataset(data, num_train=8, num_val=4, size=(96, 96), seed=3)
    try:
        executed = wbnb.run_notebook(NB_DIR / "04_train.ipynb", {
            "dataset_dir": str(data), "model_name": model_name, "output_dir": str(train), **params}, tmp_path / "nb")
    except wbnb.NotebookRunError as e:
        pytest.fail(f"{model_name}: {e}\n{_error_text(e.executed_path)}")
    nb = nbformat.read(executed, as_version=4)
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    res = json.loads((train / "train_result.json").read_text())
    assert res["unit"] == unit and res["model_name"] == model_name and res["status"] == "done"
    assert res["epochs_iters"] == res["max_epochs_iters"] == params["epochs_iters"]
    assert res["iterations"] == res["max_iterations"] >= 1
    assert (train / "best_model").is_dir()
    recs = [json.loads(x) for x in (train / "metrics.jsonl").read_text().splitlines()]
    assert {r["max_iter"] for r in recs if r["type"] == "train"} == {res["max_iterations"]}
    printed = "".join(o.get("text", "") for o in _outputs(nb) if o.output_type == "stream")
    assert f"{unit}: " in printed and "status: done" in printed  # panel.summary()


@pytest.mark.slow
def test_plain_nbconvert_execute(tmp_path):
    """``jupyter nbconvert --to notebook --execute`` with the notebook's own defaults, opened from a
    folder that is not ``notebooks/``: its relative paths (data/demo_labelme -> runs/notebooks/...)
    start from the workbench home (``$WORKBENCH_HOME`` here), not from the notebook's folder."""
    where = tmp_path / "somewhere" / "else"
    where.mkdir(parents=True)
    shutil.copy(NB_DIR / "02_check_data.ipynb", where)
    home = tmp_path / "home"
    shutil.copytree(REPO / "data" / "demo_labelme", home / "data" / "demo_labelme")
    env = dict(os.environ, WORKBENCH_HOME=str(home),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                    "--output", "executed.ipynb", str(where / "02_check_data.ipynb")],
                   check=True, env=env, capture_output=True, timeout=300)
    nb = nbformat.read(where / "executed.ipynb", as_version=4)
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    assert {"image/png", PLOTLY} <= _mimetypes(nb)
    assert (home / "runs" / "notebooks" / "check" / "check_dataset_result.json").is_file()
    assert not (where / "runs").exists() and not (tmp_path / "somewhere" / "runs").exists()


def test_notebook_paths_start_from_the_home(tmp_path, monkeypatch):
    from workbench.paths import from_home, home

    monkeypatch.delenv("WORKBENCH_HOME", raising=False)
    assert home() == REPO  # the checkout the package runs from
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.chdir(REPO / "notebooks")
    assert from_home("data/x") == str(tmp_path / "data" / "x")
    assert from_home("/abs/y.jpg", None, 0, "coco", "http://h/a.jpg") == ("/abs/y.jpg", None, 0, "coco", "http://h/a.jpg")
    assert from_home(["a.jpg", "/b.jpg"]) == [str(tmp_path / "a.jpg"), "/b.jpg"]
