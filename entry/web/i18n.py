"""Translations (a stand-in): ``gettext`` returns the English message as it is, until the catalogs come.

Python code marks its texts ``_("English text")``; the templates ``{{ _("English text") }}``.
"""

from __future__ import annotations


def gettext(message: str) -> str:
    return message


def ngettext(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


_ = gettext
