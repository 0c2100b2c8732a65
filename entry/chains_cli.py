"""``mpoxflow chains [CLUSTER]`` (issue 21 item 2): the chains of transmission, as ``engine.chains`` finds them.

``entry.cli`` registers it with its own runner (``register``), so this module imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from entry.cli_types import ActorOf, EngineOf, Json, Run

Rows = Callable[[list[dict[str, Any]], list[str], str], str]

#: The columns of the list, and of one cluster's nodes and edges.
CLUSTER_COLUMNS = ["id", "status", "cases", "contacts", "outside", "first_onset", "last_onset"]
NODE_COLUMNS = ["id", "kind", "state", "onset", "case"]
EDGE_COLUMNS = ["from", "to", "link", "on", "kind"]


def _status(cluster: dict[str, Any]) -> str:
    return "active" if cluster["active"] else "ended"


def render_list(clusters: list[dict[str, Any]], rows: Rows) -> str:
    return rows([{**c, "status": _status(c)} for c in clusters], CLUSTER_COLUMNS, "no chains of transmission")


def render_cluster(cluster: dict[str, Any], rows: Rows) -> str:
    head = (f"{cluster['id']}  {_status(cluster)}  {cluster['cases']} case(s), {cluster['contacts']} contact(s)"
            + (f", {cluster['outside']} part(s) outside your units" if cluster["outside"] else "")
            + f"  onset {cluster['first_onset'] or '-'} to {cluster['last_onset'] or '-'}")
    nodes = [{**n, "kind": "outside your units" if n["kind"] == "outside" else n["kind"]} for n in cluster["nodes"]]
    return "\n".join([head, "", "nodes:", rows(nodes, NODE_COLUMNS, "none"), "", "edges:",
                      rows(cluster["edges"], EDGE_COLUMNS, "none")])


def register(app: typer.Typer, run: Run, engine_of: EngineOf, actor_of: ActorOf, render_rows: Rows) -> None:
    """Add ``chains`` to ``app``; ``run`` is the CLI's runner (errors to exit statuses), ``engine_of`` opens the
    command's engine, ``actor_of`` resolves ``--as``, ``render_rows`` prints a table."""

    @app.command("chains")
    def chains_command(
        ctx: typer.Context,
        cluster: Annotated[str | None, typer.Argument(help="One cluster (cluster-N, as the list names it): its "
                                                           "nodes and edges.")] = None,
        as_json: Json = False,
        as_user: Annotated[str | None, typer.Option("--as", metavar="USER", help="Read as this user: only what "
                                                    "their units may see (default $MPOXFLOW_ACTOR, else your user "
                                                    "name).")] = None,
    ) -> None:
        """The chains of transmission: clusters of cases and contacts linked by exposures, contacts who became
        cases and source cases (active first, then by last onset); with CLUSTER, its nodes and edges. Ids
        only."""
        from engine.chains import Chains

        def action() -> Any:
            engine = engine_of(ctx).viewing_as(actor_of(as_user))
            chains = Chains(engine.runtime)
            return chains.clusters() if cluster is None else chains.cluster(cluster)

        def render(result: Any) -> str:
            return render_list(result, render_rows) if cluster is None else render_cluster(result, render_rows)

        run(as_json, action, render, _flag)


def _flag(field: str) -> str:
    return "CLUSTER" if field == "cluster" else "--" + field.replace("_", "-")
