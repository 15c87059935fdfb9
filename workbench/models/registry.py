"""Model registry: model name (PaddleX list) -> family factory.

A *family* (Detectron2, Mask-RT-DETR, ...) registers the names it builds with
``register_family(names, factory)``. ``factory`` is either a callable
``factory(name, weights=None, device=None, **overrides) -> model`` or a string
``"package.module:function"`` imported on first use, so registering a family does not import its
heavy dependencies (``import workbench`` stays fast and works without Detectron2).

The model objects every family returns have ``.train(...)``, ``.evaluate(...)`` and
``.predict(...)``, and ``predict`` yields ``workbench.engine.result.Result`` objects.

A family also declares the official pretrained weights of its names (``pretrained``: name ->
``engine.weights.PretrainedWeights``, and ``no_pretrained``: why the others have none);
``pretrained_table()`` is the one table of every name, ``resolve_model_weights(name, weights)``
turns ``weights="coco"`` into that checkpoint, downloaded once into the cache.
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.errors import UnknownModelError, WeightsError
from ..engine.weights import PretrainedWeights, fetch_pretrained, is_coco, resolve_weights

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
    # official pretrained weights: model name -> PretrainedWeights (weights="coco"); why the
    # family's other names have none
    pretrained: dict = field(default_factory=dict)
    no_pretrained: str = ""


def register_family(names: Iterable[str], factory: Factory | str, family: str | None = None,
                    replace: bool = False, unit: str | None = None, train_defaults: dict | None = None,
                    train_options: dict | None = None, smoke: dict | None = None,
                    pretrained: dict[str, PretrainedWeights] | None = None, no_pretrained: str | None = None) -> None:
    """Register the model ``names`` built by ``factory`` (callable or ``"module:function"``)."""
    names = [names] if isinstance(names, str) else list(names)
    family = family or (factory if isinstance(factory, str) else getattr(factory, "__module__", "family"))
    for n in names:
        if n in _NAME_TO_FAMILY and _NAME_TO_FAMILY[n] != family and not replace:
            raise ValueError(f"model name {n!r} is already registered by family {_NAME_TO_FAMILY[n]!r}")
    entry = _FAMILIES.setdefault(family, {"factory": factory, "names": []})
    entry["factory"] = factory
    old = entry.get("info") or FamilyInfo(family)
    unknown = sorted(set(pretrained or {}) - set(names))
    if unknown:
        raise ValueError(f"pretrained weights declared for names this family does not register: {unknown}")
    entry["info"] = FamilyInfo(family, unit or old.unit, dict(train_defaults or old.train_defaults),
                               dict(train_options or old.train_options), dict(smoke or old.smoke),
                               {**old.pretrained, **(pretrained or {})},
                               no_pretrained if no_pretrained is not None else old.no_pretrained)
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


def pretrained_table() -> dict[str, PretrainedWeights | None]:
    """Every registered model name -> its official COCO weights (``None``: there are none)."""
    return {n: family_info(n).pretrained.get(n) for n in available_models()}


def coco_weights(name: str) -> PretrainedWeights:
    """The official COCO weights of ``name``; a ``WeightsError`` saying why there are none (and
    which names have them) otherwise."""
    info = family_info(name)
    entry = info.pretrained.get(name)
    if entry is None:
        have = [n for n, e in pretrained_table().items() if e is not None]
        why = f" ({info.no_pretrained})" if info.no_pretrained else ""
        raise WeightsError(
            f"{name}: no public COCO weights exist for this model{why}. weights='coco' is available for: "
            f"{', '.join(have) or 'none'}. Train {name} from scratch (weights=None) or pass weights you have "
            "(a local file or a URL)."
        )
    return entry


def resolve_model_weights(name: str, weights, timeout: float = 15.0,
                          suffixes: tuple[str, ...] | None = None) -> tuple[Path, PretrainedWeights | None]:
    """The local weights file for ``create_model(name, weights=...)`` and, when it is the official
    checkpoint of ``name`` (``weights="coco"``, its URL, or a local copy under its file name),
    its ``PretrainedWeights`` (the family then builds the architecture and classes it was trained
    with)."""
    check_name(name)
    official = family_info(name).pretrained.get(name)
    if is_coco(weights):
        entry = coco_weights(name)
        return fetch_pretrained(entry, timeout), entry
    path = resolve_weights(weights, timeout=timeout, **({"suffixes": suffixes} if suffixes else {}))
    return path, official if official is not None and path.name == official.filename else None


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

    ``weights``: a local checkpoint (file or a folder holding ``model.pth``), a URL, or
    ``"coco"``: the official COCO weights of ``name`` (``pretrained_table()``), downloaded once
    into the cache; ``None`` builds a randomly initialised model (training from scratch). ``device``: ``"cpu"``,
    ``"gpu"``/``"cuda"``, ``"gpu:0"``; default: the GPU when there is one. ``overrides`` are
    family options (see the family's ``create_model``).
    """
    check_name(name)
    entry = _FAMILIES[_NAME_TO_FAMILY[name]]
    factory = _resolve(entry["factory"])
    entry["factory"] = factory
    return factory(name, weights=weights, device=device, **overrides)
