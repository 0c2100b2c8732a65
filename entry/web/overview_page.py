"""The outbreak at a glance (issue 21 item 1): ``/overview``, each figure drawn (inline SVG, no script, no style),
its numbers as a table (``<details>``) and a CSV download (``/overview/NAME.csv``, column names in the page's
language, or ``?lang=da|en``); ``/overview/figures/NAME.svg`` (the page's SVG) and ``.png``: one figure as a file.
Only the reader's units' numbers (``engine.overview``); internal ids only, no personal data."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from engine.overview import NAMES, Overview
from entry.web import figures, i18n
from entry.web.pages import Eng, Who, render, request_language

router = APIRouter(include_in_schema=False, dependencies=[Depends(request_language)])
Name = Literal[NAMES]  # type: ignore[valid-type]
#: The most rows of a figure's table the page shows (the CSV has them all).
TABLE_ROWS = 200


@router.get("/overview")
def overview_page(request: Request, who: Who, engine: Eng) -> Response:
    computed = Overview(engine.runtime).figures(pep_rows=TABLE_ROWS)
    shown = [{"name": name, "title": i18n.gettext(figures.TITLES[name]), "svg": figures.inline_svg(figure),
              "headers": [figures.header(c) for c in figure.columns], "rows": figures.table(figure, TABLE_ROWS),
              "more": max(0, figure.meta.get("total", len(figure.rows)) - TABLE_ROWS), "meta": figure.meta}
             for name, figure in computed.items()]
    return render(request, "overview.html", figures=shown)


@router.get("/overview/{name}.csv")
def overview_csv(request: Request, name: Name, who: Who, engine: Eng,
                 lang: Literal["da", "en"] | None = None) -> Response:
    figure = Overview(engine.runtime).figures()[name]
    text = figures.csv_of(figure, lang)
    return Response(text.encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


@router.get("/overview/figures/{name}.{fmt}")
def overview_file(request: Request, name: Name, fmt: Literal["svg", "png"], who: Who, engine: Eng) -> Response:
    figure = Overview(engine.runtime).figures()[name]
    if fmt == "svg":  # the page's SVG (no style attribute: the pages' CSP holds for it as a document too)
        return Response(figures.inline_svg(figure).encode("utf-8"), media_type="image/svg+xml")
    return Response(figures.render(figure, fmt), media_type="image/png")
