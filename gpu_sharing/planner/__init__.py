"""The planner (pure): (inventory, demands, current, policy) -> frozen Plan."""

from gpu_sharing.planner.planner import plan
from gpu_sharing.planner.types import ModelDemand, Plan, PlannerPolicy, RunningInstance

__all__ = ["plan", "ModelDemand", "Plan", "PlannerPolicy", "RunningInstance"]
