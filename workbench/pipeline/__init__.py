"""The step pipeline: one dispatcher for ``Global.mode`` and one demo chain.

``run_config(cfg)`` runs the step a loaded config names (check_dataset, train, evaluate, predict,
export) for any registered model family; ``run_demo(...)`` runs the demo chain (convert → check →
split → train → evaluate → predict) as Python calls or as the step notebooks, from one plan.
"""

from .demo import DEMO_CHAIN, demo_plan, run_demo
from .dispatch import MODES, run_config

__all__ = ["run_config", "MODES", "run_demo", "demo_plan", "DEMO_CHAIN"]
