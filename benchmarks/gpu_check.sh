#!/usr/bin/env bash
# The GPU check in one call (benchmarks/gpu_check.py; docs/benchmarks.md, "GPU check"):
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options]   # e.g. --output "$OUT/gpu_check.json"
#   bash benchmarks/gpu_check.sh --prepare-deps           # on a machine with the venv and PyPI: write
#                                                         # build/gpu_check_deps/ for a bare GPU machine
#
# A GPU machine that has torch but not this project's other packages (the lent H200: python3 3.12 with
# torch, no network) runs the check with the bundle --prepare-deps writes: Detectron2 and its pure-Python
# needs copied from the venv (Detectron2 is not on PyPI: tools/install_detectron2.py), and wheels of the
# compiled ones (pycocotools, faster-coco-eval) for that machine's Python. Carry build/gpu_check_deps along;
# this script installs the wheels into a temporary folder when the interpreter lacks them.
#
# Environment: PYTHON (default: .venv/bin/python when it imports torch, else python3); GPU_CHECK_TIMEOUT
# (hard limit of the whole run in seconds, default 540, under a 10-minute command limit; gpu_check.py's
# --budget-s, default 420, stops starting optional stages well before); GPU_CHECK_DEPS (the bundle,
# default build/gpu_check_deps); GPU_PY_VERSION (--prepare-deps: the GPU machine's Python, default 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS=${GPU_CHECK_DEPS:-build/gpu_check_deps}

if [[ "${1:-}" == "--prepare-deps" ]]; then
    VENV_PY=${PYTHON:-.venv/bin/python}
    rm -rf "$DEPS"
    mkdir -p "$DEPS/site" "$DEPS/wheels"
    # pure-Python packages (and their dist-info): copied from the venv
    "$VENV_PY" - "$DEPS/site" <<'EOF'
import importlib.metadata as md
import importlib.util
import shutil
import sys
from pathlib import Path

dest = Path(sys.argv[1])
for mod in ("detectron2", "fvcore", "iopath", "yacs", "termcolor", "omegaconf", "antlr4"):
    pkg = Path(importlib.util.find_spec(mod).origin).parent
    if any(pkg.rglob("*.so")):
        sys.exit(f"{mod} has compiled extensions: it needs a wheel for the GPU machine, not a copy")
    shutil.copytree(pkg, dest / mod, ignore=shutil.ignore_patterns("__pycache__"))
    for dist in md.packages_distributions().get(mod, []):
        info = Path(md.distribution(dist)._path)
        shutil.copytree(info, dest / info.name)
EOF
    # compiled packages: wheels for the GPU machine's Python, at the venv's versions
    pins=$("$VENV_PY" -c 'import importlib.metadata as m; print(" ".join(f"{d}=={m.version(d)}" for d in ("pycocotools", "faster-coco-eval")))')
    # shellcheck disable=SC2086
    "$VENV_PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PY_VERSION:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DEPS/wheels" $pins
    du -sh "$DEPS"
    echo "bundle in $DEPS: carry it to the GPU machine (device run: carry=[\"$DEPS\"])"
    exit 0
fi

if [[ -n "${PYTHON:-}" ]]; then
    PY=$PYTHON
elif [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import torch' 2>/dev/null; then
    PY=.venv/bin/python
else
    PY=python3
fi

if ! "$PY" -c 'import detectron2, pycocotools, faster_coco_eval, fvcore' 2>/dev/null; then
    if [[ -d "$DEPS/site" ]]; then
        site=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
        shopt -s nullglob
        wheels=("$DEPS"/wheels/*.whl)
        if ((${#wheels[@]})); then
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${wheels[@]}"
        fi
        export PYTHONPATH="$(cd "$DEPS/site" && pwd):$site${PYTHONPATH:+:$PYTHONPATH}"
        echo "gpu_check.sh: using the bundle $DEPS (wheels installed into $site)"
    else
        echo "gpu_check.sh: $PY lacks detectron2/pycocotools/faster_coco_eval and there is no $DEPS" \
            "(bash benchmarks/gpu_check.sh --prepare-deps); the stages that need them will fail" >&2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" # workbench from this checkout, installed or not
export PYTHONUNBUFFERED=1
echo "gpu_check.sh: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])')), limit ${GPU_CHECK_TIMEOUT:-540} s"
exec timeout --kill-after=20 "${GPU_CHECK_TIMEOUT:-540}" "$PY" benchmarks/gpu_check.py "$@"
