"""The family-neutral engine: the model contract (``BaseModel``), the training run (``BaseTrainer``),
training arguments, the run directory and ``train_result.json`` schema, weights, the launcher, the
class map, the exception hierarchy and the ``Result`` currency. See docs/architecture.md."""

from .classes import ClassMap
from .errors import WorkbenchError
from .result import Result
from .run_dir import RunDir, TrainResult
from .train_args import TrainArgs

__all__ = ["Result", "ClassMap", "WorkbenchError", "RunDir", "TrainResult", "TrainArgs"]
