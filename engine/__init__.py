"""The engine: applies a change in one unit of work (guards, state, timers and audit entry together); see
``engine.core`` for its parts."""

from engine.clock import Clock, SimulatedClock, SystemClock
from engine.core import Engine

__all__ = ["Clock", "Engine", "SimulatedClock", "SystemClock"]
