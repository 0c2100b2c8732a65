"""Firing due timers: the shared firing loop, used by `clock advance` now and by the worker later."""
