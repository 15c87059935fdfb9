"""Model registry: model name (PaddleX list) -> family factory.

A *family* (Detectron2, Mask-RT-DETR, ...) registers the names it builds with
``register_family(names, factory)``. ``factory`` is either a callable
``factory(name, weights=None, device=None, **overrides) -> model`` or a string
``"package.module:function"`` imported on first use, so registering a family does not import its
heavy dependencies (``import workbench`` stays fast and works without Detectron2).

The model objects every family returns have ``.train(...)``, ``.evaluate(...)`` and
``.predict(...)``, and ``predict`` yields ``workbench.engine.result.Result`` objects.
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..engine.errors import UnknownModelError

Factory = Callable[..., Any]

_FAMILIES: dict[str, dict] = {}      # family name -> {"factory": ..., "names": [...], "info": FamilyInfo}
_NAME_TO_FAMILY: dict[str, str] = {}


@dataclass(frozen=True)
class FamilyInfo:
    """What a family declares without importing its engine: the unit ``epochs_iters`` counts
    (``"iterations"`` or ``"epochs"``), its default training arguments and its own options."""

    family: str
    unit: str = "iterations"
    train_defaults: dict = field(default_factory=dict)
    train_options: dict = field(default_factory=dict)
    # the smallest working configuration: {"name": a model name, "model": create_model kwargs,
    # "train": train kwargs}; the contract tests train it
    smoke: dict = field(default_factory=dict)


def register_family(names: Iterable[str], factory: Factory | str, family: str | None = None,
                    replace: bool = False, unit: str | None = None, train_defaults: dict | None = None,
                    train_options: dict | None = None, smoke: dict | None = None) -> None:
    """Register the model ``names`` built by ``factory`` (callable or ``"module:function"``)."""
    names = [names] if isinstance(names, str) else list(names)
    family = family or (factory if isinstance(factory, str) else getattr(factory, "__module__", "family"))
    for n in names:
        if n in _NAME_TO_FAMILY and _NAME_TO_FAMILY[n] != family and not replace:
            raise ValueError(f"model name {n!r} is already registered by family {_NAME_TO_FAMILY[n]!r}")
    entry = _FAMILIES.setdefault(family, {"factory": factory, "names": []})
    entry["factory"] = factory
    old = entry.get("info") or FamilyInfo(family)
    entry["info"] = FamilyInfo(family, unit or old.unit, dict(train_defaults or old.train_defaults),
                               dict(train_options or old.train_options), dict(smoke or old.smoke))
    for n in names:
        _NAME_TO_FAMILY[n] = family
        if n not in entry["names"]:
            entry["names"].append(n)


def available_models() -> list[str]:
    return sorted(_NAME_TO_FAMILY)


def family_of(name: str) -> str:
    check_name(name)
    return _NAME_TO_FAMILY[name]


def family_info(name: str) -> FamilyInfo:
    """The ``FamilyInfo`` of the family that builds ``name`` (no heavy import)."""
    return _FAMILIES[family_of(name)]["info"]


def families() -> dict[str, list[str]]:
    """Registered family -> its model names."""
    return {f: list(e["names"]) for f, e in _FAMILIES.items()}


def check_name(name: str) -> None:
    if name not in _NAME_TO_FAMILY:
        close = difflib.get_close_matches(str(name), _NAME_TO_FAMILY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownModelError(f"unknown model name {name!r}.{hint} Valid names: {', '.join(available_models())}")


def _resolve(factory: Factory | str) -> Factory:
    if callable(factory):
        return factory
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr or "create_model")


def create_model(name: str, weights: str | None = None, device: str | None = None, **overrides):
    """Build the model ``name`` (a PaddleX model name) of its family.

    ``weights``: a local checkpoint (file or a folder holding ``model.pth``) or a URL; ``None``
    builds a randomly initialised model (training from scratch). ``device``: ``"cpu"``,
    ``"gpu"``/``"cuda"``, ``"gpu:0"``; default: the GPU when there is one. ``overrides`` are
    family options (see the family's ``create_model``).
    """
    check_name(name)
    entry = _FAMILIES[_NAME_TO_FAMILY[name]]
    factory = _resolve(entry["factory"])
    entry["factory"] = factory
    return factory(name, weights=weights, device=device, **overrides)
