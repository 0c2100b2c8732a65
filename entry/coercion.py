"""Typer without pydantic for the command line's plain parameters.

Typer (0.2x) turns every parameter's text into its value through a pydantic ``TypeAdapter``, built when the
parameter is first processed; importing pydantic for that is some 14% of a short command's time. Every parameter of
``mpoxflow`` is text, a whole number, a number of seconds or a flag, so ``install()`` has typer coerce those here:
a value whose result is certain (text; a plain decimal number) is converted directly, to what the adapter gives for
it; anything else (a malformed number, an option of another kind) goes to typer's own adapter, so that what is
accepted and every message a wrong value gets stay typer's. ``tests/test_cli_startup.py`` checks both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: The values converted here: ASCII digits only (``int("١٢")`` is 12, pydantic refuses it), short enough that
#: ``int`` and ``float`` give exactly what pydantic gives.
_INT = re.compile(r"[+-]?[0-9]{1,18}", re.ASCII)
_FLOAT = re.compile(r"[+-]?[0-9]{1,15}(\.[0-9]{1,15})?", re.ASCII)
_PLAIN = (str, int, float, bool)
_UNSURE = object()


def plain(annotation: Any, value: Any) -> Any:
    """``value`` (from the command line) as ``annotation``, when certain; else ``_UNSURE``."""
    if not isinstance(value, str):
        return value if type(value) is annotation else _UNSURE
    if annotation is str:
        return value
    if annotation is int and _INT.fullmatch(value):
        return int(value)
    if annotation is float and _FLOAT.fullmatch(value):
        return float(value)
    return _UNSURE


def install() -> bool:
    """Have typer coerce plain parameters without pydantic; False (nothing changed) on a typer without the
    adapter layer this replaces."""
    try:
        from typer import core
        from typer._coercion import RuntimeParam, TypeDescriptor
    except ImportError:  # pragma: no cover - an older typer coerces without pydantic anyway
        return False
    original = getattr(core, "build_runtime_param", None)
    if original is None or getattr(original, "mpoxflow_plain", False):
        return original is not None

    @dataclass(frozen=True)
    class Plain(RuntimeParam):  # type: ignore[misc]
        """A plain parameter's coercion: here when certain, else by typer's adapter (built then)."""

        descriptor: Any

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            done = plain(self.annotation, value)
            if done is not _UNSURE:
                return done
            return original(self.descriptor)._coerce_value(value, param=param, ctx=ctx)

    def build_runtime_param(descriptor: TypeDescriptor) -> Any:
        info = descriptor.parameter_info
        if (descriptor.annotation not in _PLAIN or info.parser is not None or info.min is not None
                or info.max is not None or info.clamp or info.formats or descriptor.is_file or descriptor.is_path
                or descriptor.is_choice):
            return original(descriptor)
        return Plain(parameter_info=info, annotation=descriptor.annotation, descriptor=descriptor)

    build_runtime_param.mpoxflow_plain = True  # type: ignore[attr-defined]
    core.build_runtime_param = build_runtime_param
    return True
