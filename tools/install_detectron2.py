"""Install Detectron2 into the current Python environment from a PyPI source mirror.

Detectron2 is not published on PyPI under its own name. ``pb1-detectron2==0.6`` is a
byte-identical source mirror of upstream tag v0.6 (only the distribution name differs), but its
sdist lacks the C++/CUDA sources, so it cannot be built as published. This script:

1. does nothing if ``import detectron2`` already works (a user who built upstream from git with
   its C++ ops keeps it);
2. downloads the sdist from PyPI and checks its sha256;
3. unpacks it into a temporary folder and makes these changes there, and only these:
   - ``setup.py``: ``ext_modules=[]`` - build Python-only (torchvision provides ROIAlign and NMS,
     which is all Mask R-CNN and Cascade Mask R-CNN need) and drop the ``install_requires``
     (the project pins Detectron2's runtime dependencies itself; the mirror pins ``black==21.4b2``,
     a formatter nothing imports);
   - the four module-level ``from detectron2 import _C`` imports (layers/deform_conv.py,
     layers/rotated_boxes.py, layers/roi_align_rotated.py, evaluation/fast_eval_api.py) tolerate
     the missing extension: ``_C`` becomes ``None`` and only the ops behind it (deformable conv,
     rotated boxes, the C++ COCO evaluator) are unavailable;
   - ``detectron2/model_zoo/configs`` is copied to a top-level ``configs/``, where setup.py looks
     for the model-zoo YAML files (otherwise none are installed);
4. builds and installs it with ``pip install --no-deps --no-build-isolation``.

Pillow >= 10 removed ``Image.LINEAR`` which v0.6 uses; ``workbench.models.detectron2`` sets
``PIL.Image.LINEAR = PIL.Image.BILINEAR`` before importing Detectron2 (no change to its files).

Only the Python standard library is used, so this runs before anything else is installed:
``python tools/install_detectron2.py``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/60/26/48f5bbb7ee492696a21da23303daeecdfe3942c498a70d3"
    "4108acf63b2bd/pb1-detectron2-0.6.tar.gz"
)
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
C_IMPORT_FILES = [
    "detectron2/layers/deform_conv.py",
    "detectron2/layers/rotated_boxes.py",
    "detectron2/layers/roi_align_rotated.py",
    "detectron2/evaluation/fast_eval_api.py",
]
C_IMPORT = "from detectron2 import _C\n"
C_IMPORT_TOLERANT = (
    "try:  # patched by tools/install_detectron2.py: built without the C++ extension\n"
    "    from detectron2 import _C\n"
    "except ImportError:\n"
    "    _C = None\n"
)


def already_installed(python: str) -> bool:
    code = "import detectron2, detectron2.model_zoo; print(detectron2.__version__)"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if r.returncode == 0:
        print(f"detectron2 {r.stdout.strip()} is already importable; nothing to do")
        return True
    return False


def download(dest: Path, cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        cached = cache_dir / SDIST_NAME
        if cached.is_file() and sha256(cached) == SDIST_SHA256:
            return cached
    target = dest / SDIST_NAME
    print(f"downloading {SDIST_URL}")
    try:
        with urllib.request.urlopen(SDIST_URL, timeout=120) as r, open(target, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        raise SystemExit(f"could not download {SDIST_URL}: {e}") from None
    got = sha256(target)
    if got != SDIST_SHA256:
        raise SystemExit(f"{SDIST_NAME}: sha256 {got} does not match the expected {SDIST_SHA256}")
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, cache_dir / SDIST_NAME)
    return target


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def patch_source(src: Path) -> None:
    setup_py = src / "setup.py"
    text = setup_py.read_text()
    for old, new in [
        ("ext_modules=get_extensions(),", "ext_modules=[],"),
        ("install_requires=[", "install_requires=[] and ["),
    ]:
        if old not in text:
            raise SystemExit(f"setup.py: expected text {old!r} not found; is this the v0.6 mirror?")
        text = text.replace(old, new, 1)
    setup_py.write_text(text)
    for rel in C_IMPORT_FILES:
        p = src / rel
        t = p.read_text()
        if C_IMPORT not in t:
            raise SystemExit(f"{rel}: expected line {C_IMPORT.strip()!r} not found")
        p.write_text(t.replace(C_IMPORT, C_IMPORT_TOLERANT, 1))
    zoo = src / "detectron2" / "model_zoo" / "configs"
    if not (src / "configs").exists():
        shutil.copytree(zoo, src / "configs")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter of the target environment")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=Path.home() / ".cache" / "workbench",
        help="keep the verified sdist here between installs",
    )
    ap.add_argument("--force", action="store_true", help="reinstall even if detectron2 imports")
    args = ap.parse_args(argv)
    if not args.force and already_installed(args.python):
        return 0
    with tempfile.TemporaryDirectory(prefix="d2build-") as tmp:
        tmp = Path(tmp)
        sdist = download(tmp, args.cache_dir)
        with tarfile.open(sdist) as tf:
            tf.extractall(tmp, filter="data")
        src = tmp / "pb1-detectron2-0.6"
        patch_source(src)
        cmd = [args.python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-cache-dir", str(src)]
        print("+", " ".join(cmd))
        r = subprocess.run(cmd)
        if r.returncode != 0:
            return r.returncode
    check = (
        "import PIL.Image as I; I.LINEAR = getattr(I, 'LINEAR', I.BILINEAR); import detectron2, "
        "detectron2.model_zoo as z; from detectron2.modeling import build_model; "
        "p = z.get_config_file('COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml'); print('detectron2', "
        "detectron2.__version__, 'installed; model zoo configs at', p)"
    )
    return subprocess.run([args.python, "-c", check]).returncode


if __name__ == "__main__":
    sys.exit(main())
