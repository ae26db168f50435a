"""The embedding engine: plans each record (:mod:`.plan`), batches and streams records through a loaded model
(:mod:`.engine`), and accumulates what each record emits (:mod:`.outputs`)."""

from .engine import Engine, Progress
from .outputs import MemorySink, RecordOutput, Sink
from .plan import Plan, Planner

__all__ = ["Engine", "MemorySink", "Plan", "Planner", "Progress", "RecordOutput", "Sink"]
