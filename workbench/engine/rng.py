"""Every random-number generator a training process draws from, saved and restored as one value.

A training-state checkpoint stores ``capture()``; a resumed run calls ``restore()`` before its first
step, so that everything drawn afterwards (data order, augmentation, proposal sampling, loss point
sampling, denoising queries) is what the uninterrupted run drew. The value holds only tensors,
ints, floats and ``None`` (it loads with ``torch.load(weights_only=True)``): Python's ``random``,
NumPy's global generator, PyTorch's CPU generator and, when CUDA is initialised, every CUDA
device's generator.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def capture() -> dict:
    """The state of every global generator of this process."""
    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out = {
        "python": {"version": int(version), "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore(state: dict) -> None:
    """Set every generator to ``state`` (from ``capture``); generators it does not name stay as they are."""
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(int(w) for w in p["words"].tolist()), p["gauss"]))
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def derived_seed(*parts: int) -> int:
    """A 32-bit seed that is a fixed function of ``parts`` (e.g. run seed, process rank, step, slot)."""
    ss = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])
    return int(ss.generate_state(1, np.uint32)[0])
