"""One exception hierarchy for the workbench.

Every error a user can cause (bad input, bad config, missing weights, a class mismatch, a diverged
run) is a ``WorkbenchError``; the command line maps the base class to an exit code in one place
(``workbench.cli``) and prints the one-line message without a traceback. Each class also derives
from the built-in exception a caller would expect (``ValueError``, ``RuntimeError`` …), so code
written against those keeps working.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base of every error the workbench raises on purpose; ``exit_code`` is the CLI's status."""

    exit_code = 1


class ConfigError(WorkbenchError, ValueError):
    """A bad config key or value; the message names the key."""

    exit_code = 2


class UnknownModelError(WorkbenchError, ValueError):
    """A model name that no family builds; the message lists the valid names."""

    exit_code = 2


class DatasetError(WorkbenchError, ValueError):
    """A dataset that cannot be used as asked (missing split, no categories, no images …)."""


class WeightsError(WorkbenchError, RuntimeError):
    """Weights that cannot be found, downloaded or read, or that belong to another model."""


class ClassMismatchError(WorkbenchError, ValueError):
    """The classes of a model and of a dataset differ (they would silently give AP 0)."""


class TrainingDivergedError(WorkbenchError, FloatingPointError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


class TrainingFailedError(WorkbenchError, RuntimeError):
    """A training process failed; the message says where its log is."""


class NotAvailableError(WorkbenchError, NotImplementedError):
    """A step that this model family does not have (e.g. export for a family without one)."""

    exit_code = 2


class UnknownArgumentError(WorkbenchError, TypeError):
    """A training or model argument that the model family does not have."""

    exit_code = 2


class NoTrainedModelError(WeightsError, FileNotFoundError):
    """The weights a training run should have written are not there: train first, or name them."""
