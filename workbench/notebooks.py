"""Run the step notebooks in batch, papermill-style.

``run_notebook(path, parameters, output_dir)`` inserts a cell with the given parameters right
after the cell tagged ``parameters`` (tag ``injected-parameters``, as papermill does), executes
the notebook with nbclient in the notebook's own folder (so its relative paths work), and saves
the executed copy into ``output_dir`` -- also when a cell fails, so the error can be read there.

``run_all_notebooks(output_dir, ...)`` runs the six step notebooks in order on the demo data
(LabelMe folder -> COCO dataset -> split -> train -> evaluate -> predict); each step reads the
previous one's files. Command line (wired as ``workbench run-notebook``)::

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

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
STEP_NOTEBOOKS = ("01_check_data", "02_convert_labelme", "03_split", "04_train", "05_evaluate", "06_predict")
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


class NotebookRunError(RuntimeError):
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
    extra_env = {"PLOTLY_RENDERER": os.environ.get("PLOTLY_RENDERER", "plotly_mimetype+notebook"),
                 "PYTHONUNBUFFERED": "1", **(env or {})}
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


def demo_parameters(output_dir: str | os.PathLike, labelme_dir: str | os.PathLike | None = None,
                    model: str = "MaskRCNN-ResNet50-FPN", epochs_iters: int = 2, batch_size: int = 2,
                    input_size: int = 320, model_options: dict | None = None,
                    train_options: dict | None = None, **extra) -> dict[str, dict]:
    """Per-notebook parameters that chain the six steps through ``output_dir``."""
    out = Path(output_dir).resolve()
    labelme_dir = Path(labelme_dir).resolve() if labelme_dir else NOTEBOOK_DIR.parent / "data" / "demo_labelme"
    dataset_dir = out / "dataset"
    train_dir = out / "train"
    common = {"dataset_dir": str(dataset_dir)}
    params = {
        "02_convert_labelme": {"labelme_dir": str(out / "labelme"), **common},
        "01_check_data": {**common, "output_dir": str(out / "check")},
        "03_split": {**common},
        "04_train": {**common, "model_name": model, "output_dir": str(train_dir), "epochs_iters": epochs_iters,
                     "batch_size": batch_size, "input_size": input_size, "model_options": dict(model_options or {}),
                     "train_options": {"eval_interval": max(1, epochs_iters), "log_interval": 1,
                                       **(train_options or {})}},
        "05_evaluate": {**common, "model_dir": str(train_dir / "best_model"), "model_name": model,
                        "output_dir": str(out / "evaluate")},
        "06_predict": {"model_dir": str(train_dir / "best_model"), "model_name": model,
                       "inputs": str(dataset_dir / "images"), "output_dir": str(out / "predict")},
    }
    for name, p in extra.items():
        if name in params:
            params[name].update(p)
    params["_labelme_source"] = {"path": str(labelme_dir)}
    return params


def run_all_notebooks(output_dir: str | os.PathLike = "runs/notebooks", labelme_dir: str | os.PathLike | None = None,
                      model: str = "MaskRCNN-ResNet50-FPN", epochs_iters: int = 2, batch_size: int = 2,
                      input_size: int = 320, model_options: dict | None = None,
                      train_options: dict | None = None, notebooks: list[str] | None = None,
                      notebook_dir: str | os.PathLike | None = None, verbose: bool = True) -> dict[str, Path]:
    """Run the step notebooks in data-flow order on the demo data (a copy; ``data/`` is never
    changed): convert (02), check (01), split (03), train (04), evaluate (05), predict (06).

    Executed copies go to ``output_dir/notebooks``; every step's files under ``output_dir``.
    """
    import shutil

    out = Path(output_dir).resolve()
    nb_dir = Path(notebook_dir) if notebook_dir else NOTEBOOK_DIR
    params = demo_parameters(out, labelme_dir, model, epochs_iters, batch_size, input_size, model_options,
                             train_options)
    src = Path(params.pop("_labelme_source")["path"])
    work = out / "labelme"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(src, work)
    order = ["02_convert_labelme", "01_check_data", "03_split", "04_train", "05_evaluate", "06_predict"]
    if notebooks:
        order = [n for n in order if n in notebooks]
    done: dict[str, Path] = {}
    for name in order:
        t0 = time.time()
        if verbose:
            print(f"== {name}", flush=True)
        done[name] = run_notebook(nb_dir / f"{name}.ipynb", params[name], out / "notebooks")
        if verbose:
            print(f"   {time.time() - t0:.1f} s -> {done[name]}", flush=True)
    return done


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
