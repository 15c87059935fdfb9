"""Run the step notebooks in batch, papermill-style.

``run_notebook(path, parameters, output_dir)`` inserts a cell with the given parameters right
after the cell tagged ``parameters`` (tag ``injected-parameters``, as papermill does), executes
the notebook with nbclient in the notebook's own folder (so its relative paths work), and saves
the executed copy into ``output_dir`` -- also when a cell fails, so the error can be read there.

The kernel runs in batch mode (``WORKBENCH_BATCH=1``, see ``workbench.widgets.setup_notebook``):
the saved copy is readable offline, also as ``jupyter nbconvert --to html`` of it written beside
it -- the panels' static pictures are plain outputs, progress bars show their final count, and
plotly figures load ``plotly.min.js`` written once into ``output_dir`` instead of embedding it.

``run_all_notebooks(output_dir, ...)`` runs the demo chain (``workbench.pipeline.demo``) as the six
step notebooks, in data-flow order; each step reads the previous one's files. Command line (wired as ``workbench run-notebook``)::

    python -m workbench.notebooks NOTEBOOK [-p key=value ...] [--output-dir DIR]
    python -m workbench.notebooks --all [--output-dir DIR] [-p key=value ...]

Plain ``jupyter nbconvert --to notebook --execute NOTEBOOK`` works too (with the defaults of
the parameters cell).
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path
from typing import Any

from .engine.errors import WorkbenchError

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
STEP_NOTEBOOKS = ("01_convert_labelme", "02_check_data", "03_split", "04_train", "05_evaluate", "06_predict")
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


class NotebookRunError(WorkbenchError, RuntimeError):
    """A cell failed; ``executed_path`` is the saved copy showing the error."""

    def __init__(self, message: str, executed_path: Path):
        super().__init__(message)
        self.executed_path = executed_path


def parse_value(text: str) -> Any:
    """``-p key=value`` values: Python literals (``3``, ``0.5``, ``True``, ``None``, ``[1, 2]``,
    ``'x'``), anything else is a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_parameters(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"parameter {item!r} is not of the form key=value (key a Python name)")
        out[key] = parse_value(value)
    return out


def parameter_names(nb) -> list[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    cell = nb.cells[_parameters_index(nb)]
    names = []
    for node in ast.parse(cell.source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            if isinstance(t, ast.Name):
                names.append(t.id)
    return names


def _parameters_index(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            return i
    raise ValueError("the notebook has no code cell tagged 'parameters'")


def inject_parameters(nb, parameters: dict, strict: bool = True):
    """Insert (or replace) the ``injected-parameters`` cell after the ``parameters`` cell."""
    import nbformat

    if strict:
        unknown = sorted(set(parameters) - set(parameter_names(nb)))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; this notebook's parameters: {parameter_names(nb)}")
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    if not parameters:
        return nb
    idx = _parameters_index(nb)
    lines = ["# Parameters injected by workbench.notebooks.run_notebook"]
    for k, v in parameters.items():
        if isinstance(v, Path):
            v = str(v)
        text = repr(v)
        if ast.literal_eval(text) != v:  # only literals: the injected cell must be plain data
            raise ValueError(f"parameter {k}={v!r} is not a Python literal")
        lines.append(f"{k} = {text}")
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": [INJECTED_TAG]})
    nb.cells.insert(idx + 1, cell)
    return nb


def run_notebook(path: str | os.PathLike, parameters: dict | None = None, output_dir: str | os.PathLike = "runs/notebooks",
                 timeout: int = 1800, kernel_name: str | None = None, cwd: str | os.PathLike | None = None,
                 strict: bool = True, env: dict | None = None) -> Path:
    """Execute ``path`` with ``parameters`` and save the executed copy as ``output_dir/<name>``.

    Runs in the notebook's folder unless ``cwd`` is given. Returns the executed notebook's path;
    raises :class:`NotebookRunError` (with that path) when a cell fails.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from .viz.figures import write_plotly_js
    from .widgets.common import BATCH_ENV

    path = Path(path)
    if not path.is_file() and path.suffix != ".ipynb" and path.with_suffix(".ipynb").is_file():
        path = path.with_suffix(".ipynb")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: notebook not found")
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, dict(parameters or {}), strict=strict)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    out_path = output_dir / path.name
    kname = kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    old_env = {}
    # batch mode (workbench.widgets.batch_mode): static pictures, finished progress bars and
    # figures drawn by the one plotly.min.js written beside the executed copies
    write_plotly_js(output_dir)
    extra_env = {BATCH_ENV: "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    for k, v in extra_env.items():  # the kernel inherits this process's environment
        old_env[k] = os.environ.get(k)
        os.environ[k] = v
    client = NotebookClient(nb, timeout=timeout, kernel_name=kname, allow_errors=False,
                            resources={"metadata": {"path": str(Path(cwd) if cwd else path.parent.resolve())}})
    t0 = time.time()
    try:
        client.execute()
    except CellExecutionError as e:
        nbformat.write(nb, out_path)
        raise NotebookRunError(f"{path.name} failed (executed copy: {out_path}):\n{e}", out_path) from None
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    nb.metadata.setdefault("workbench", {})["run"] = {"parameters": {k: repr(v) for k, v in (parameters or {}).items()},
                                                      "seconds": round(time.time() - t0, 1)}
    nbformat.write(nb, out_path)
    return out_path


def run_all_notebooks(output_dir: str | os.PathLike = "runs/notebooks", labelme_dir: str | os.PathLike | None = None,
                      model: str = "MaskRCNN-ResNet50-FPN", epochs_iters: int = 2, batch_size: int = 2,
                      input_size: int = 320, model_options: dict | None = None,
                      train_options: dict | None = None, notebooks: list[str] | None = None,
                      notebook_dir: str | os.PathLike | None = None, verbose: bool = True) -> dict[str, Path]:
    """The demo chain (``workbench.pipeline.demo``) as the step notebooks, in data-flow order:
    convert (01), check (02), split (03), train (04), evaluate (05), predict (06). Executed copies go
    to ``output_dir/notebooks``; returns notebook name -> executed copy."""
    from .pipeline.demo import DEMO_CHAIN, run_demo

    summary = run_demo(output_dir, data=labelme_dir, model=model, epochs_iters=epochs_iters, batch_size=batch_size,
                       input_size=input_size, notebooks=True, steps=notebooks, model_options=model_options,
                       train_options=train_options, notebook_dir=notebook_dir, verbose=verbose)
    names = {s.key: s.notebook for s in DEMO_CHAIN}
    return {names[k]: Path(v["notebook"]) for k, v in summary["steps"].items()}


def main(argv: list[str] | None = None) -> int:
    """``workbench run-notebook NOTEBOOK -p key=value ... [--output-dir DIR]`` or ``--all``."""
    ap = argparse.ArgumentParser(prog="workbench run-notebook",
                                 description="Execute a step notebook with parameters (papermill-style).")
    ap.add_argument("notebook", nargs="?", help="notebook path, or a step name such as 04_train")
    ap.add_argument("-p", "--parameter", action="append", default=[], metavar="key=value",
                    help="set a variable of the parameters cell (Python literal or string); repeatable")
    ap.add_argument("--output-dir", default="runs/notebooks", help="where the executed copy is saved")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    ap.add_argument("--all", action="store_true",
                    help="run all six step notebooks on the demo data (outputs under --output-dir)")
    ap.add_argument("--model", default="MaskRCNN-ResNet50-FPN", help="with --all: the model to train")
    ap.add_argument("--epochs-iters", type=int, default=2, help="with --all: training iterations")
    args = ap.parse_args(argv)
    try:
        if args.all:
            done = run_all_notebooks(args.output_dir, model=args.model, epochs_iters=args.epochs_iters)
            print("\n".join(str(p) for p in done.values()))
            return 0
        if not args.notebook:
            ap.error("give a NOTEBOOK or --all")
        path = Path(args.notebook)
        if not path.exists() and (NOTEBOOK_DIR / f"{args.notebook}.ipynb").is_file():
            path = NOTEBOOK_DIR / f"{args.notebook}.ipynb"
        out = run_notebook(path, parse_parameters(args.parameter), args.output_dir, timeout=args.timeout)
        print(out)
        return 0
    except NotebookRunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
