"""Translations for the pages: a stand-in that returns the English message (the i18n branch brings the catalogs).

The templates say ``{{ _("English text") }}``; ``install`` gives a Jinja environment ``_``, ``gettext`` and
``ngettext``.
"""

from __future__ import annotations

from typing import Any


def gettext(message: str) -> str:
    return message


def ngettext(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


_ = gettext


def install(env: Any) -> None:
    """Jinja's i18n extension on ``env``, new-style (``_("… %(name)s", name=x)`` formats and escapes)."""
    if "jinja2.ext.InternationalizationExtension" not in env.extensions:
        env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(gettext, ngettext, newstyle=True)
