"""Where relative paths in the step notebooks point: the workbench home.

A notebook's defaults (``data/demo_labelme``, ``runs/notebooks/...``) are relative to the home, not
to the folder the notebook happens to be opened from, so a notebook copied elsewhere (or opened by
JupyterLab from any root) reads and writes the same places. The home is

1. ``$WORKBENCH_HOME`` when set;
2. else the source checkout this package runs from (the folder holding ``workbench/`` and
   ``pyproject.toml``: an editable install, the usual case);
3. else the current directory.

Absolute paths are kept as they are; ``~`` is expanded.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "WORKBENCH_HOME"


def home() -> Path:
    """The folder relative notebook paths start from (see the module docstring)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "workbench").is_dir():
        return checkout
    return Path.cwd()


def from_home(*paths):
    """Each of ``paths`` as an absolute path string, relative ones taken from :func:`home`.

    ``None``, numbers (a camera index), URLs and bare names (a word without a path separator or
    suffix that is no file under the home, such as ``weights="coco"``) pass through unchanged,
    lists element by element (a list of images), so a notebook can call it on each path
    parameter. One argument: one value; several: a tuple."""
    base = home()

    def one(p):
        if isinstance(p, (list, tuple)):
            return [one(x) for x in p]
        if isinstance(p, str) and ("://" in p or not p or ("/" not in p and os.sep not in p and "." not in p
                                                            and not (base / p).exists())):
            return p
        if isinstance(p, (str, os.PathLike)):
            q = Path(p).expanduser()
            return str(q if q.is_absolute() else base / q)
        return p

    out = tuple(one(p) for p in paths)
    return out[0] if len(out) == 1 else out
