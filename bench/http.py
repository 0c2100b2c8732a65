"""The HTTP API's cost: the worklist and a transition over real HTTP against the same calls on the Python API.

    .venv/bin/python bench/http.py [--cases N] [--contacts C] [--units U] [--page P] [--requests R] [--warmup W]
                                   [--backend sqlite|postgresql|both] [--pg-url URL]

Per backend a scratch database (bench/harness.py) on a simulated clock at a fixed instant (as ``mpoxflow init
--simulated-clock``), with its users and an API token for the staff ``bench`` (``Accounts.issue_token``: a bearer
token, so no login, Argon2 or CSRF on the timed path), gets N confirmed cases (``--cases``, default 1,000; a
worklist of 3N tasks: each case's phone and written notifications, §3.1, and its sample to SSI, §2.4) and 2 (R + W)
suspected ones (a task each on the worklist: chase the test result, §2.1), copies of cases the engine made
(bench/seed.py; not timed). The clock then moves an hour on.

The server is the product's application (``entry.web.server.create_app``) under uvicorn in a thread on a free port of
127.0.0.1; the client one keep-alive ``httpx2`` client. The baseline is the same call on one ``Engine`` on the same
database (``engine.bootstrap.engine_on``: the database's clock, as each request's engine), in the same process,
never at the same time. Timed, R calls each (``--requests``, default 200) after W warm-up calls (``--warmup``,
default 5), each call's latency on its own:

* worklist: ``GET /api/due`` (read and decoded) against ``Engine.worklist()``;
* transition: ``POST /api/cases/{id}/confirm`` against ``Engine.apply(id, "confirm", ...)``, a case each.

Throughput is R over the wall time of the R calls; p50 and p99 nearest-rank. Checked (exit 1 otherwise): every
status 200; the HTTP worklist equals ``Engine.worklist()`` and holds 3N + 2 (R + W) tasks; every confirm answers
the case confirmed; afterwards every case is confirmed with 3 tasks on the worklist, and every audit chain is intact.

**The worklist at scale** (issue 15), on a second scratch database: C open contacts (``--contacts``, default
100,000; each exposed in a household, so informing it and assessing PEP are its tasks, §5.5, §6.2, beside its
monitoring and PEP-window timers), of C/10 confirmed cases (three tasks each), copies of a contact and a case the
engine made (not timed; PostgreSQL then analysed, as autovacuum leaves it), spread over U units under the root
(``--units``, default 10, ``Bench team N``, made with ``Engine.add_unit``): the cases dealt out over them in turn,
each contact in its case's unit, every timer carrying its object's unit (as the engine writes them). Timed, R calls
each after W warm-up calls, one page of P items (``--page``, default 50) three ways: the query written by hand in
SQL (``hand_query``: the same index ranges merged, run with SQLAlchemy's ``text`` on a pooled connection, rows
fetched), the Python API (``Engine.worklist_page``: the same read, the items and the cursor made) and HTTP (``GET
/api/due?limit=P``, read and decoded): the first page, the first page of the cases' tasks only (``kind=case``, a
tenth of the tasks) and a page from the middle of the list (``after``: a cursor at its median). Checked: every way
gives the same items, and the first page answers in under 100 ms (p50) over HTTP and on the Python API: the issue's
target, printed as met or not. On the same database, the auditor's desk's first page (``GET /audit``, its pickers
and newest entries) against ``Engine.audit_choices`` and ``Engine.audit_page``: under 300 ms (p50), printed as met
or not (the contacts are seeded without their history, so the log there is short).

**The worklist with access filtering** (issue 17), on the same database: the staff ``bench:team``, a member of the
first unit alone (its objects a U-th of them), reads the first page of their worklist (100 items) four ways, R calls
each after W warm-up calls: by hand (``UNIT_QUERY``: one SELECT over the timers of the user's units with the
open-task predicate, by due instant and id), on the Python API (``Engine.worklist_page`` viewing as the user), over
HTTP with the user's token (``GET /api/due?limit=100``) and as the worklist page (``GET /worklist``: its first 100
tasks of the next 7 days). Checked: by hand, the Python API and HTTP give the same items, all of the user's unit,
and the page shows its tasks; printed: each against the query by hand, and whether the first page answers in
under 100 ms (p50) over HTTP and as the page.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/ first on sys.path would shadow the standard library's `http`
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.harness import ACTOR, ADMIN, BenchFailure, say  # noqa: E402
from bench.seed import Seeder, templates  # noqa: E402

#: A Monday morning in Copenhagen: the cases are opened and confirmed then; the timed calls run an hour later.
START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
TIMED_AT = START + timedelta(hours=1)
PCR_ON = date(2025, 3, 3)
#: The units the worklist at scale is spread over (``--units``, each ``Bench team N`` under the root), the staff
#: member of the first of them whose worklist is timed, and the size of its first page.
TEAM = "Bench team"
TEAM_USER = "bench:team"
UNIT_PAGE = 100


def cases(at: Any) -> list[str]:
    """A confirmed case and a suspected one, a person each."""
    engine = at(START)
    made = []
    for name in ("CONFIRMED", "SUSPECTED"):
        made.append(engine.add_person(ref=f"BENCH-{name}", actor=ACTOR)["id"])
        case = engine.open("case", "open", person=made[-1], actor=ACTOR,
                           data={"onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})
        if name == "CONFIRMED":
            engine.apply(case["id"], "confirm", data={"pcr_on": PCR_ON}, actor=ACTOR)
    return made


def contact_and_case(at: Any) -> list[str]:
    """A confirmed case (its person consenting to tracing, §5.2) and a household contact of it, a person each."""
    engine = at(START)
    made = [engine.add_person(ref=f"BENCH-{name}", actor=ACTOR)["id"] for name in ("CASE", "CONTACT")]
    case = engine.open("case", "open", person=made[0], actor=ACTOR,
                       data={"onset": date(2025, 3, 1), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
    engine.apply(case, "confirm", data={"pcr_on": PCR_ON}, actor=ACTOR)
    engine.apply(case, "consent", data={"tracing": True}, actor=ACTOR)
    engine.open("contact", "add", person=made[1], actor=ACTOR, data={
        "case": case, "exposed": date(2025, 3, 2), "kind": "household", "risk": None, "reason": None,
        "anonymous_via_doctor": False})
    return made


#: The worklist's page query written by hand (``Repository.worklist`` builds the same): per status a range of one
#: index in the worklist's order up to the page's size (the open tasks pending or fired, the missed ones, the
#: timers parked as failed), merged in that order; after a position, two ranges per status (the rest of the
#: position's due instant, and what is due later). ``{kind}`` is filled in per page.
ARM = """SELECT * FROM (SELECT id, object_kind, object_id, name, task, due_at, overdue_at, status, rule, attempts
      FROM timers WHERE status = '{status}'{open}{kind}{position} ORDER BY due_at, id LIMIT :n) AS {alias}"""
OPEN = " AND task IS NOT NULL AND satisfied_at IS NULL AND resolved_at IS NULL"


def hand_query(kind: str | None, after: bool) -> Any:
    """The page's SQL by hand (of one kind, after a position), its instants bound through the column's type."""
    from sqlalchemy import Integer, bindparam, text

    from persistence.models import Timer

    positions = {"tied": " AND due_at = :after_due AND id > :after_id", "later": " AND due_at > :after_due"} \
        if after else {"all": ""}
    arms = [ARM.format(status=status, open=OPEN if status != "failed" else "",
                       kind=" AND object_kind = :kind" if kind else "", position=position,
                       alias=f"{status}_{where}")
            for status in ("pending", "fired", "missed", "failed") for where, position in positions.items()]
    sql = "SELECT * FROM (\n" + "\nUNION ALL\n".join(arms) + "\n) AS worklist ORDER BY due_at, id LIMIT :n"
    due_at = Timer.__table__.c.due_at.type
    query = text(sql).bindparams(bindparam("after_due", type_=due_at)) if after else text(sql)
    return query.columns(id=Integer, due_at=due_at)


def calls(run: list[Callable[[], None]]) -> tuple[float, list[float]]:
    """The wall time of ``run``'s calls, one after another, and each one's latency, in seconds."""
    latencies = []
    started = time.perf_counter()
    for call in run:
        before = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - before)
    return time.perf_counter() - started, latencies


def p50_ms(args: Any, ways: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Each way's median latency in milliseconds, over ``args.requests`` calls after ``args.warmup`` unmeasured."""
    measured = {}
    for way, call in ways.items():
        for _ in range(args.warmup):
            call()
        measured[way] = 1000 * harness.percentile(calls([call] * args.requests)[1], 50)
    return measured


@contextmanager
def serving(url: str) -> Iterator[str]:
    """The product's application over ``url`` under uvicorn in a thread; yields its base URL."""
    import uvicorn

    from entry.web.server import create_app

    # IPPROTO_TCP given: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it Nagle's
    # algorithm and the client's delayed ACK add some 40 ms to every response.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))  # the port is chosen by the system and held from now on: no race
    server = uvicorn.Server(uvicorn.Config(create_app(url), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise BenchFailure("the uvicorn server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def ok(response: Any) -> Any:
    if response.status_code != 200:
        raise BenchFailure(f"{response.request.method} {response.request.url.path}: status {response.status_code}, "
                           f"{response.text[:500]}")
    return response.json()


def run_backend(backend: str, args: Any, units: list[Any], table: harness.Table) -> None:
    import httpx2 as httpx

    from engine.accounts import Accounts
    from engine.bootstrap import engine_on
    from workflows.definition import Settings

    spare = 2 * (args.warmup + args.requests)
    with harness.fresh(backend, args.pg_url, start=START) as db:
        seeder = Seeder(db)
        seeder.add([units[0]] * args.cases)
        suspected = [f"case-{pk}" for pk in seeder.add([units[1]] * spare)]
        engine = engine_on(db, Settings())
        secret = Accounts(engine).issue_token(ACTOR, "bench/http.py", actor=ADMIN)["secret"]
        engine.simulated_clock.set(TIMED_AT)
        engine.save_clock()
        # The tasks a confirmed case puts on the worklist (§3.1 phone and written, §2.4 the sample), as the engine made
        per_case = sum(t["task"] is not None and t["status"] == "pending" for t in units[0].timers)
        # and a suspected case's (§2.1 chase the test result: done by the confirm, so gone after the run).
        per_suspected = sum(t["task"] is not None and t["status"] == "pending" for t in units[1].timers)
        tasks = per_case * args.cases + per_suspected * spare
        with serving(db.url) as base, httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"},
                                                timeout=60) as client:
            expected = engine.worklist()
            if len(expected) != tasks or ok(client.get("/api/due")) != expected:
                raise BenchFailure(f"GET /api/due is not Engine.worklist() of {tasks} tasks ({len(expected)})")
            size = len(client.get("/api/due").content) / 1024

            def due() -> None:
                if len(ok(client.get("/api/due"))) != tasks:
                    raise BenchFailure("GET /api/due lost tasks")

            def worklist() -> None:
                if len(engine.worklist()) != tasks:
                    raise BenchFailure("Engine.worklist() lost tasks")

            def post(case: str) -> Callable[[], None]:
                def call() -> None:
                    view = ok(client.post(f"/api/cases/{case}/confirm", json={"pcr_on": PCR_ON.isoformat()}))
                    if view.get("id") != case or view.get("state") != "confirmed":
                        raise BenchFailure(f"POST /api/cases/{case}/confirm answered {str(view)[:300]}")
                return call

            def apply(case: str) -> Callable[[], None]:
                def call() -> None:
                    if engine.apply(case, "confirm", data={"pcr_on": PCR_ON}, actor=ACTOR)["state"] != "confirmed":
                        raise BenchFailure(f"Engine.apply({case}, 'confirm') did not confirm it")
                return call

            half = spare // 2
            by_http, by_python = [post(c) for c in suspected[:half]], [apply(c) for c in suspected[half:]]
            # Warm-up calls first (not counted); the worklist before any confirm, which adds to it.
            measured = {}
            for operation, (http, python) in {
                f"`GET /api/due` ({tasks} tasks, {size:.0f} KiB)": ([due] * spare, [worklist] * spare),
                "`POST /api/cases/{id}/confirm`": (by_http, by_python),
            }.items():
                calls(http[:args.warmup] + python[:args.warmup])
                measured[operation] = calls(http[args.warmup:half]), calls(python[args.warmup:half])
        total = args.cases + spare
        confirmed, on_worklist = len(engine.list("case", "confirmed")), len(engine.worklist())
        report = engine.audit_verify()
        # the users' 3 and the token's; per case its person's, its opening, its confirm
        if (confirmed, on_worklist, report["intact"], report["entries"]) != (total, per_case * total, True,
                                                                             4 + 3 * total):
            raise BenchFailure(f"after the run: {confirmed} confirmed cases of {total}, {on_worklist} tasks, audit "
                               f"intact {report['intact']} over {report['entries']} entries ({4 + 3 * total})")
    for operation, ((http_s, http_l), (python_s, python_l)) in measured.items():
        http_rate, python_rate = len(http_l) / http_s, len(python_l) / python_s
        http_p99, python_p99 = 1000 * harness.percentile(http_l, 99), 1000 * harness.percentile(python_l, 99)
        http_p50, python_p50 = 1000 * harness.percentile(http_l, 50), 1000 * harness.percentile(python_l, 50)
        say(f"{backend:<11} {operation:<40} http {http_rate:7.1f} req/s (p50 {http_p50:.2f} ms, p99 {http_p99:.2f} "
            f"ms)   python {python_rate:7.1f} calls/s (p50 {python_p50:.2f} ms, p99 {python_p99:.2f} ms)")
        harness.ratio(f"http/python {operation.split('`')[1]}", backend, http_rate / python_rate)
        table.add(backend, operation, f"{http_rate:.1f}", f"{python_rate:.1f}", f"{http_rate / python_rate:.2f}",
                  f"{http_p99:.1f}", f"{python_p99:.1f}")


def run_scale(backend: str, args: Any, units: list[Any], table: harness.Table, reads_table: harness.Table) -> None:
    """The worklist at scale: a page of it by hand in SQL, on the Python API and over HTTP (the module's doc)."""
    import httpx2 as httpx

    from engine.accounts import Accounts
    from engine.bootstrap import engine_on
    from engine.queries import encode_cursor
    from persistence.repository import format_id
    from workflows.definition import Settings

    with harness.fresh(backend, args.pg_url, start=START) as db:
        engine = engine_on(db, Settings())
        teams = [engine.add_unit(f"{TEAM} {n}", parent="Danmark", actor=ADMIN)["id"] for n in range(1, args.units + 1)]
        team_pks = [int(team.removeprefix("unit-")) for team in teams]
        if team_pks:
            engine.add_user(TEAM_USER, "staff", actor=ADMIN, units=[teams[0]])
        seeder = Seeder(db)
        # The cases dealt out over the units in turn, each contact in its case's unit (the placement rule
        # ``parent``), their timers beside them (as the engine writes them: the object's unit on each timer).
        dealt = iter(range(10**9))
        unit_of: dict[int, int] = {}

        def in_a_unit(copy: Any, unit: int | None = None) -> None:
            for kind, row in copy.objects:
                if kind == "case":
                    unit = team_pks[next(dealt) % len(team_pks)] if team_pks else row["unit_id"]
                    unit_of[row["id"]] = unit
                elif kind == "contact":
                    row["case_id"] = next(case_of)
                    unit = unit_of[row["case_id"]]
                row["unit_id"] = unit
            for timer in copy.timers:
                timer["unit_id"] = unit

        cases_made = seeder.add([units[0]] * max(1, args.units, args.contacts // 10), history=False,
                                adjust=in_a_unit)
        case_of = iter(cases_made * (args.contacts // len(cases_made) + 1))
        seeder.add([units[1]] * args.contacts, history=False, adjust=in_a_unit)
        harness.settle(db)
        secret = Accounts(engine).issue_token(ACTOR, "bench/http.py", actor=ADMIN)["secret"]
        engine.simulated_clock.set(TIMED_AT)
        engine.save_clock()
        with db.engine.connect() as connection:
            tasks = connection.exec_driver_sql("SELECT count(*) FROM timers WHERE task IS NOT NULL AND satisfied_at "
                                               "IS NULL AND resolved_at IS NULL AND status IN ('pending', 'fired', "
                                               "'missed')").scalar_one()
            middle = connection.execute(hand_query(None, False), {"n": max(1, tasks // 2)}).all()[-1]
        cursor = encode_cursor({"due_at": instant_of(middle.due_at), "timer": format_id("timer", middle.id)})
        say(f"{backend:<11} worklist at scale: {args.contacts} open contacts of {len(cases_made)} cases, {tasks} "
            f"open tasks")
        pages = {"first page": {}, "first page, kind=case": {"kind": "case"}, "page from the middle": {"after": cursor}}
        with serving(db.url) as base, httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"},
                                                timeout=60) as client:
            for label, filters in pages.items():
                by_hand = hand_query(filters.get("kind"), "after" in filters)
                params = {"n": args.page, **({"kind": filters["kind"]} if "kind" in filters else {})}
                if "after" in filters:
                    params.update(after_due=middle.due_at, after_id=middle.id)

                def raw(query: Any = by_hand, values: dict[str, Any] = params) -> list[int]:
                    with db.engine.connect() as connection:
                        return [row.id for row in connection.execute(query, values)]

                def python(filters: dict[str, Any] = filters) -> dict[str, Any]:
                    return engine.worklist_page(limit=args.page, **filters)

                def http(filters: dict[str, Any] = filters) -> dict[str, Any]:
                    return ok(client.get("/api/due", params={"limit": args.page, **filters}))  # type: ignore[no-any-return]

                expected = python()
                full = min(args.page, tasks) if not filters else 1  # the others: some items, at least
                if [f"timer-{pk}" for pk in raw()] != [i["timer"] for i in expected["items"]] or \
                        http() != expected or len(expected["items"]) < full:
                    raise BenchFailure(f"{label}: the page by hand, on the Python API and over HTTP differ")
                measured = {}
                for way, call in (("raw", raw), ("python", python), ("http", http)):
                    for _ in range(args.warmup):
                        call()
                    measured[way] = calls([call] * args.requests)[1]
                p50 = {way: 1000 * harness.percentile(latencies, 50) for way, latencies in measured.items()}
                p99 = {way: 1000 * harness.percentile(latencies, 99) for way, latencies in measured.items()}
                say(f"{backend:<11} worklist {label:<24} by hand {p50['raw']:7.2f} ms (p99 {p99['raw']:.2f})   "
                    f"python {p50['python']:7.2f} ms (p99 {p99['python']:.2f})   http {p50['http']:7.2f} ms "
                    f"(p99 {p99['http']:.2f})")
                harness.ratio(f"python/by-hand worklist {label}", backend, p50["raw"] / p50["python"])
                harness.ratio(f"http/by-hand worklist {label}", backend, p50["raw"] / p50["http"])
                if label == "first page":
                    met = p50["http"] < 100 and p50["python"] < 100
                    say(f"{backend:<11} first page of the worklist under 100 ms (p50, {args.contacts} open "
                        f"contacts): {'met' if met else 'NOT met'}")
                table.add(backend, f"{label} ({args.page} a page, {tasks} open tasks)", f"{p50['raw']:.2f}",
                          f"{p50['python']:.2f}", f"{p50['http']:.2f}", f"{p50['raw'] / p50['python']:.2f}",
                          f"{p50['raw'] / p50['http']:.2f}")
            time_worklist_page(backend, args, engine, client, contacts=args.contacts)
            time_read_log(backend, args, db, client, reads_table, tasks=tasks)
            time_audit_desk(backend, args, engine, client, contacts=args.contacts)
            if team_pks:
                team_secret = Accounts(engine).issue_token(TEAM_USER, "bench/http.py", actor=ADMIN)["secret"]
                with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {team_secret}"},
                                  timeout=60) as team_client:
                    time_one_unit(backend, args, db, team_client, team_pks, table, tasks=tasks)


#: The worklist of one unit's member by hand: the open tasks of the objects of the user's units (the timers carry
#: their object's unit), in the worklist's order.
UNIT_QUERY = """SELECT id, object_kind, object_id, name, task, due_at, overdue_at, status, rule, attempts, unit_id,
       assignee_id FROM timers
 WHERE unit_id IN :units AND task IS NOT NULL AND satisfied_at IS NULL AND resolved_at IS NULL
   AND status IN ('pending', 'fired', 'missed')
 ORDER BY due_at, id LIMIT :n"""


def time_one_unit(backend: str, args: Any, db: Any, client: Any, teams: list[int], table: harness.Table, *,
                  tasks: int) -> None:
    """The worklist with access filtering (issue 17): a staff member of the first of the units, whose objects
    are a ``1/units`` share of them, reads the first page of their worklist by hand in SQL (``UNIT_QUERY``, the
    user's units given), on the Python API (``Engine.worklist_page`` viewing as the user), over HTTP
    (``GET /api/due?limit=100``) and as the worklist page (``GET /worklist``: its first 100 tasks of the next 7
    days, against ``Engine.worklist_page`` of the same within)."""
    from sqlalchemy import bindparam, text

    from engine.bootstrap import engine_on
    from engine.units import UnitTree, scope_of
    from entry.web.pages import WORKLIST_PAGE
    from persistence.repository import Repository
    from workflows.calendar import DANISH
    from workflows.definition import Settings

    viewer = engine_on(db, Settings()).viewing_as(TEAM_USER)
    with db.reading() as session:
        repo = Repository(session)
        scope, tree = scope_of(repo, TEAM_USER), UnitTree.load(repo)
    mine = sorted(scope.units or ())
    if scope.everything or mine != [teams[0]]:
        raise BenchFailure(f"{TEAM_USER} is not a member of {TEAM} 1 alone: {mine}")
    by_hand = text(UNIT_QUERY).bindparams(bindparam("units", expanding=True))
    values = {"units": mine, "n": UNIT_PAGE}
    with db.engine.connect() as connection:
        own = connection.exec_driver_sql(
            "SELECT count(*) FROM timers WHERE task IS NOT NULL AND satisfied_at IS NULL AND resolved_at IS NULL "
            f"AND status IN ('pending', 'fired', 'missed') AND unit_id = {teams[0]}").scalar_one()
    now = viewer.clock.now()
    week = datetime.combine(now.astimezone(DANISH).date() + timedelta(days=8), datetime.min.time(),
                            tzinfo=DANISH) - now  # as the page: the next 7 days after today

    def raw() -> list[int]:
        with db.engine.connect() as connection:
            return [row.id for row in connection.execute(by_hand, values)]

    def python() -> dict[str, Any]:
        return viewer.worklist_page(limit=UNIT_PAGE)

    def http() -> dict[str, Any]:
        return ok(client.get("/api/due", params={"limit": UNIT_PAGE}))  # type: ignore[no-any-return]

    def page_python() -> dict[str, Any]:
        return viewer.worklist_page(week, limit=WORKLIST_PAGE)

    def page_http() -> str:
        response = client.get("/worklist")
        if response.status_code != 200:
            raise BenchFailure(f"GET /worklist as {TEAM_USER}: status {response.status_code}")
        return str(response.text)

    expected = python()
    unit_id = f"unit-{teams[0]}"
    if [f"timer-{pk}" for pk in raw()] != [i["timer"] for i in expected["items"]] or http() != expected or \
            len(expected["items"]) != min(UNIT_PAGE, own) or any(i["unit"] != unit_id for i in expected["items"]):
        raise BenchFailure(f"the first page of {TEAM_USER}'s worklist by hand, on the Python API and over HTTP "
                           f"differ, or hold another unit's tasks ({len(expected['items'])} of {own})")
    shown = page_python()["items"]
    html = page_http()
    if not all(f'href="/objects/{i["object"]}"' in html for i in shown) or html.count("<tr") < len(shown):
        raise BenchFailure(f"GET /worklist as {TEAM_USER} does not show its first page of tasks")
    say(f"{backend:<11} worklist of one unit: {TEAM_USER} in {tree.path(teams[0])} ({len(teams)} units), {own} of "
        f"{tasks} open tasks")
    measured = p50_ms(args, {"raw": raw, "python": python, "http": http, "page python": page_python,
                             "page http": page_http})
    say(f"{backend:<11} worklist of one unit, first page ({UNIT_PAGE})   by hand {measured['raw']:7.2f} ms   python "
        f"{measured['python']:7.2f} ms   http {measured['http']:7.2f} ms   GET /worklist {measured['page http']:7.2f}"
        f" ms (python {measured['page python']:.2f} ms)")
    harness.ratio("python/by-hand worklist of one unit", backend, measured["raw"] / measured["python"])
    harness.ratio("http/by-hand worklist of one unit", backend, measured["raw"] / measured["http"])
    harness.ratio("page/by-hand worklist of one unit", backend, measured["raw"] / measured["page http"])
    met = measured["http"] < 100 and measured["page http"] < 100
    say(f"{backend:<11} first page of one unit's worklist under 100 ms (p50, GET /api/due and GET /worklist, "
        f"{args.contacts} open contacts in {len(teams)} units): {'met' if met else 'NOT met'}")
    table.add(backend, f"one unit of {len(teams)}, first page ({UNIT_PAGE} a page, {own} of {tasks} open tasks)",
              f"{measured['raw']:.2f}", f"{measured['python']:.2f}", f"{measured['http']:.2f}",
              f"{measured['raw'] / measured['python']:.2f}", f"{measured['raw'] / measured['http']:.2f}")
    table.add(backend, f"one unit of {len(teams)}, `GET /worklist` ({WORKLIST_PAGE} tasks)", f"{measured['raw']:.2f}",
              f"{measured['page python']:.2f}", f"{measured['page http']:.2f}",
              f"{measured['raw'] / measured['page python']:.2f}", f"{measured['raw'] / measured['page http']:.2f}")


def time_worklist_page(backend: str, args: Any, engine: Any, client: Any, *, contacts: int) -> None:
    """The worklist page (``GET /worklist``, the HTML page a case worker opens: its sections and first page of
    tasks) over HTTP against ``Engine.worklist_page`` of the same page; the issue's target is 300 ms."""
    from entry.web.pages import WORKLIST_PAGE

    def python() -> None:
        engine.worklist_page(limit=WORKLIST_PAGE)

    def http() -> None:
        response = client.get("/worklist")
        if response.status_code != 200 or response.text.count('href="/objects/') < WORKLIST_PAGE:
            raise BenchFailure(f"GET /worklist: status {response.status_code}, not a page of tasks")

    measured = p50_ms(args, {"python": python, "http": http})
    say(f"{backend:<11} worklist page ({WORKLIST_PAGE} tasks)   python {measured['python']:7.2f} ms   "
        f"http {measured['http']:7.2f} ms")
    say(f"{backend:<11} the worklist page under 300 ms (p50, {contacts} open contacts): "
        f"{'met' if measured['http'] < 300 else 'NOT met'}")


def time_read_log(backend: str, args: Any, db: Any, client: Any, table: harness.Table, *, tasks: int) -> None:
    """The worklist with the read log against the same without it (issue 19 item 3), in the same run: ``GET
    /worklist`` (the page: its first tasks, the hard-to-reach and changed-since-sent boxes) and ``GET
    /api/due?limit=P``, R calls each way after W warm-up calls, the two ways alternating call by call (so drift
    and load fall on both alike), the read log switched off by ``engine.reads.RECORDING`` (the server runs in this
    process). Checked: each recorded request wrote one row per person its answer shows, in one INSERT; none
    without the log."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine as Connectable

    from engine import reads

    persons = {"/worklist": 0, "/api/due": 0}
    inserts: list[str] = []

    def counted(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PERSONAL_READS"):
            inserts.append(statement)

    def rows_of(response: Any) -> int:
        with db.engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT count(*) FROM personal_reads WHERE request_id = "
                                                  f"'{response.headers['X-Request-ID']}'").scalar_one())

    def page() -> Any:
        response = client.get("/worklist")
        if response.status_code != 200 or response.text.count('href="/objects/') < min(WORKLIST_PAGE, tasks):
            raise BenchFailure(f"GET /worklist: status {response.status_code}, not a page of tasks")
        return response

    def due() -> Any:
        response = client.get("/api/due", params={"limit": args.page})
        ok(response)
        return response

    from entry.web.pages import WORKLIST_PAGE

    for label, path, call in ((f"`GET /worklist` ({WORKLIST_PAGE} tasks)", "/worklist", page),
                              (f"`GET /api/due?limit={args.page}`", "/api/due", due)):
        # What one request writes: a row per person shown, in one statement (the server's own engine).
        event.listen(Connectable, "before_cursor_execute", counted)  # every engine: the server has its own
        try:
            inserts.clear()
            response = call()
            written = rows_of(response)
        finally:
            event.remove(Connectable, "before_cursor_execute", counted)
        expected = len(set(re.findall(r'href="/objects/(person-\d+)"', response.text))) if path == "/worklist" \
            else len({i["person"] for i in response.json()["items"] if i.get("person")})
        if written != expected or written == 0 or len(inserts) != 1:
            raise BenchFailure(f"{path}: {written} rows of the read log in {len(inserts)} INSERTs for {expected} "
                               "persons shown")
        persons[path] = written
        latencies: dict[bool, list[float]] = {True: [], False: []}
        try:
            for n in range(args.warmup + args.requests):
                for recording in (True, False) if n % 2 == 0 else (False, True):
                    reads.RECORDING = recording
                    before = time.perf_counter()
                    response = call()
                    if n >= args.warmup:
                        latencies[recording].append(time.perf_counter() - before)
                    if not recording and rows_of(response) != 0:
                        raise BenchFailure(f"{path}: rows written with the read log switched off")
        finally:
            reads.RECORDING = True
        on, off = (1000 * harness.percentile(latencies[flag], 50) for flag in (True, False))
        on99, off99 = (1000 * harness.percentile(latencies[flag], 99) for flag in (True, False))
        say(f"{backend:<11} read log {label:<34} with {on:7.2f} ms (p99 {on99:.2f})   without {off:7.2f} ms "
            f"(p99 {off99:.2f})   {written} rows in {len(inserts)} INSERT")
        harness.ratio(f"without/with the read log {path}", backend, off / on)
        table.add(backend, label, str(written), f"{on:.2f}", f"{off:.2f}", f"{on - off:.2f}", f"{off / on:.2f}")


def time_audit_desk(backend: str, args: Any, engine: Any, client: Any, *, contacts: int) -> None:
    """The auditor's desk's first page (``GET /audit``, the HTML page: its pickers and the newest 50 entries)
    over HTTP against the same reads on the Python API; the issue's target is 300 ms."""
    entries = len(engine.audit_page(limit=50)["items"])

    def python() -> None:
        engine.audit_choices()
        if len(engine.audit_page(limit=50)["items"]) != entries:
            raise BenchFailure("Engine.audit_page lost entries")

    def http() -> None:
        response = client.get("/audit")
        if response.status_code != 200 or response.text.count("<tr data-seq=") != entries:
            raise BenchFailure(f"GET /audit: status {response.status_code}, not the {entries} newest entries")

    measured = p50_ms(args, {"python": python, "http": http})
    with engine.db.engine.connect() as connection:
        logged = connection.exec_driver_sql("SELECT count(*) FROM audit_log").scalar_one()
    say(f"{backend:<11} audit desk first page ({logged} entries in the log)   python {measured['python']:7.2f} ms   "
        f"http {measured['http']:7.2f} ms")
    say(f"{backend:<11} first page of the audit desk under 300 ms (p50, {contacts} open contacts): "
        f"{'met' if measured['http'] < 300 else 'NOT met'}")


def instant_of(value: Any) -> str:
    from engine.views import instant

    return str(instant(value))


def run(args: Any) -> list[harness.Table]:
    units = templates(cases, [ACTOR])
    table = harness.Table(["Backend", "Operation", "HTTP (req/s)", "Python API (calls/s)", "HTTP / Python",
                           "HTTP p99 (ms)", "Python p99 (ms)"], text=2)
    scale = harness.Table(["Backend", "Worklist page", "By hand p50 (ms)", "Python API p50 (ms)", "HTTP p50 (ms)",
                           "By hand / Python", "By hand / HTTP"], text=2)
    for backend in harness.backends(args):
        run_backend(backend, args, units, table)
    read_log = harness.Table(["Backend", "Worklist", "Rows a request", "With the read log p50 (ms)",
                              "Without p50 (ms)", "Cost (ms)", "Without / with"], text=2)
    if args.contacts:
        scale_units = templates(contact_and_case, [ACTOR])
        for backend in harness.backends(args):
            run_scale(backend, args, scale_units, scale, read_log)
    return [table, scale, read_log] if args.contacts else [table]


if __name__ == "__main__":
    options = harness.parser("The worklist and a transition over HTTP (uvicorn, bearer token) against the Python API.")
    options.add_argument("--cases", type=int, default=1000, help="confirmed cases, 3 tasks each (default 1000)")
    options.add_argument("--contacts", type=int, default=100_000,
                         help="open contacts for the worklist at scale (default 100,000; 0: skip it)")
    options.add_argument("--units", type=int, default=10,
                         help="units the contacts at scale are spread over, one user's worklist timed (default 10; "
                         "0: none)")
    options.add_argument("--page", type=int, default=50, help="items on a worklist page (default 50)")
    options.add_argument("--requests", type=int, default=200, help="timed calls per operation and side (200)")
    options.add_argument("--warmup", type=int, default=5, help="untimed calls per operation and side first (5)")
    arguments = options.parse_args()
    harness.at_least(arguments, options, cases=1, contacts=0, units=0, page=1, requests=1, warmup=0)
    sys.exit(harness.main("http", arguments, run))
