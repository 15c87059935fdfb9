"""YAML configs with PaddleX-style ``-o Section.key=value`` overrides, validated with named errors.

A config has the sections ``Global``, ``CheckDataset``, ``Train``, ``Evaluate`` and ``Predict``.
``SCHEMA`` below is the single list of known keys, their types and allowed values; a config file
or an override naming anything else is an error that names the key (and the closest known key).
"""
from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from .engine.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
MODES = ("check_dataset", "train", "evaluate", "predict", "export")

# key path -> (allowed python types, allowed values or None, default)
_NUM = (int, float)
SCHEMA: dict[str, tuple[tuple, tuple | None, Any]] = {
    "Global.model": ((str,), None, None),
    "Global.mode": ((str,), MODES, "check_dataset"),
    "Global.dataset_dir": ((str, type(None)), None, None),
    "Global.device": ((str,), None, "cpu"),
    "Global.output": ((str,), None, "output"),
    "Global.seed": ((int,), None, 0),
    "CheckDataset.convert.enable": ((bool,), None, False),
    "CheckDataset.convert.src_dataset_type": ((str,), ("LabelMe",), "LabelMe"),
    "CheckDataset.split.enable": ((bool,), None, False),
    "CheckDataset.split.train_percent": (_NUM + (type(None),), None, None),
    "CheckDataset.split.val_percent": (_NUM + (type(None),), None, None),
    "CheckDataset.split.seed": ((int,), None, 0),
    "CheckDataset.num_samples": ((int,), None, 10),
    "Train.num_classes": ((int, type(None)), None, None),
    "Train.epochs_iters": ((int,), None, 1000),
    "Train.batch_size": ((int,), None, 2),
    "Train.learning_rate": (_NUM, None, 0.01),
    "Train.warmup_steps": ((int,), None, 100),
    "Train.input_size": ((int,), None, 640),
    "Train.pretrain_weight_path": ((str, type(None)), None, None),
    "Train.resume": ((bool,), None, False),
    "Train.resume_path": ((str, type(None)), None, None),
    "Train.eval_interval": ((int,), None, 500),
    "Train.log_interval": ((int,), None, 10),
    "Train.save_interval": ((int,), None, 500),
    "Train.early_stop_patience": ((int, type(None)), None, None),
    "Train.amp": ((bool,), None, False),
    "Train.num_workers": ((int,), None, 0),
    "Train.num_processes": ((int,), None, 1),
    "Train.norm": ((str, type(None)), ("GN", "BN", "FrozenBN", "SyncBN", None), None),  # Detectron2 family
    "Train.depth": ((int, type(None)), None, None),  # Detectron2 family
    "Evaluate.weight_path": ((str, type(None)), None, None),
    "Evaluate.batch_size": ((int,), None, 1),
    "Predict.model_dir": ((str, type(None)), None, None),
    "Predict.input": ((str, int, type(None)), None, None),  # an int: a camera index
    "Predict.batch_size": ((int,), None, 1),
    "Predict.threshold": (_NUM, None, 0.5),
    "Predict.mask_threshold": (_NUM, None, 0.5),
    "Predict.recursive": ((bool,), None, True),  # a folder input: its subfolders too
    "Predict.frame_stride": ((int,), None, 1),  # a video input: every N-th frame
    "Predict.start_s": ((int, float, type(None)), None, None),  # a video input: from this second
    "Predict.end_s": ((int, float, type(None)), None, None),  # a video input: up to this second
}
SECTIONS = ("Global", "CheckDataset", "Train", "Evaluate", "Predict")




def _get(d: dict, path: str) -> Any:
    cur: Any = d
    for part in path.split("."):
        cur = cur[part]
    return cur


def _set(d: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    cur = d
    for part in parts[:-1]:
        nxt = cur.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{path}: '{part}' is a value, not a section")
        cur = nxt
    cur[parts[-1]] = value


def _is_section(key: str) -> bool:
    return any(s.startswith(key + ".") for s in SCHEMA)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if _is_section(key):
            if not isinstance(v, dict):
                raise ConfigError(f"'{key}' is a section; it needs keys under it, not the value {v!r}")
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, SCHEMA.keys(), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    section = key.split(".")[0]
    known = [k for k in SCHEMA if k.startswith(section + ".")]
    listing = f" Known keys in {section}: {', '.join(known)}." if known else f" Sections: {', '.join(SECTIONS)}."
    return ConfigError(f"unknown config key '{key}'{hint}.{listing}")


def validate_value(key: str, value: Any) -> Any:
    if key not in SCHEMA:
        raise _unknown(key)
    types, choices, _ = SCHEMA[key]
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{key}: expected {_type_names(types)}, got the boolean {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and float in types and int not in types:
        value = float(value)
    if isinstance(value, str) and float in types:
        try:  # YAML 1.1 reads "1e-3" as a string
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, types):
        raise ConfigError(f"{key}: expected {_type_names(types)}, got {type(value).__name__} {value!r}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
        if key.endswith(("_percent",)) and not 0 <= value <= 100:
            raise ConfigError(f"{key}: {value} is outside 0..100")
        if key.endswith(("batch_size", "epochs_iters", "input_size", "num_processes")) and value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
        if key.endswith(("threshold",)) and not 0 <= value <= 1:
            raise ConfigError(f"{key}: must be between 0 and 1, got {value}")
        if key.endswith("learning_rate") and value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    return value


def _type_names(types: tuple) -> str:
    if int in types and float in types:
        types = tuple(t for t in types if t is not int)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def defaults() -> dict:
    cfg: dict = {}
    for key, (_, _, default) in SCHEMA.items():
        _set(cfg, key, copy.deepcopy(default))
    return cfg


def validate(cfg: dict, source: str = "config") -> dict:
    """Check every key and value; return a full config (defaults filled in)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    for section in cfg:
        if section not in SECTIONS:
            close = difflib.get_close_matches(str(section), SECTIONS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown section '{section}'{hint} (sections: {', '.join(SECTIONS)})")
    out = defaults()
    for key, value in _flatten(cfg).items():
        try:
            _set(out, key, validate_value(key, value))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``Section.key=value``; the value is read as YAML (True, 10, 0.5, null, [1, 2], strings)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like Section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in SCHEMA:
        raise _unknown(key)
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: cannot read value {raw!r} ({e})") from None
    if SCHEMA[key][0] == (str,) or SCHEMA[key][0] == (str, type(None)):
        if value is not None and not isinstance(value, str):
            value = raw.strip()  # a path or name that YAML would read as a number
    return key, validate_value(key, value)


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A config file path, or a model name of the PaddleX list (``Mask-RT-DETR-L``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    packaged = CONFIG_DIR / f"{Path(str(name_or_path)).stem}.yaml"
    if packaged.is_file() and p.suffix in ("", ".yaml", ".yml"):
        return packaged
    names = ", ".join(available_configs())
    raise ConfigError(f"config '{name_or_path}' not found (not a file, and not a model name; known: {names})")


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    cfg = validate(raw, str(path))
    if cfg["Global"]["model"] is None:
        cfg["Global"]["model"] = path.stem
    for text in overrides or []:
        key, value = parse_override(text)
        _set(cfg, key, value)
    return cfg


def get(cfg: dict, key: str) -> Any:
    return _get(cfg, key)


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
