"""Shared fixtures: small generated datasets (fast) and the real demo data."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_LABELME = REPO / "data" / "demo_labelme"


@pytest.fixture(scope="session")
def _shapes_template(tmp_path_factory):
    from workbench.data.synthetic import make_shapes_dataset

    d = tmp_path_factory.mktemp("shapes_template")
    make_shapes_dataset(d, num_train=8, num_val=4, size=(96, 96), seed=3)
    return d


@pytest.fixture
def shapes_dir(_shapes_template, tmp_path):
    """A fresh copy of a small synthetic dataset in the PaddleX COCO layout."""
    dst = tmp_path / "shapes"
    shutil.copytree(_shapes_template, dst)
    return dst


@pytest.fixture
def demo_labelme_dir(tmp_path):
    """A copy of the real demo LabelMe data (tests never touch data/ itself)."""
    dst = tmp_path / "demo_labelme"
    shutil.copytree(DEMO_LABELME, dst)
    return dst


def trainer_up_to_init(model, dataset, out, train: dict):
    """The family's trainer of ``model`` built up to its initial weights (what a run has before its
    first step), with ``train`` as the training arguments; returns (trainer, LoadReport)."""
    import importlib

    from workbench.engine.train_args import TrainArgs

    args = TrainArgs.build(model.default_train_args, model.train_options, {**train, "progress": False})
    args.input_size = int(args.input_size or model.input_size)
    job = model.train_job(str(dataset), str(out), "cpu", args)
    module, _, cls = model.trainer.partition(":")
    tr = getattr(importlib.import_module(module), cls)(job)
    tr.run.make()
    tr.load_data()
    tr.build()
    return tr, tr.load_initial_weights()


@pytest.fixture
def trainer_init():
    """``trainer_up_to_init`` as a fixture."""
    return trainer_up_to_init
