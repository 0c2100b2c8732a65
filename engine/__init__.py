"""Applies a trigger to a workflow object: guards, state, timers and audit entry in one transaction."""

from engine.clock import Clock, SimulatedClock, SystemClock
from engine.core import Engine

__all__ = ["Clock", "Engine", "SimulatedClock", "SystemClock"]
