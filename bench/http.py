"""The HTTP API's cost: the worklist and a transition over real HTTP against the same calls through the Python API,
on SQLite and PostgreSQL, in the same run.

    .venv/bin/python bench/http.py [--cases N] [--requests R] [--warmup W] [--backend sqlite|postgresql|both]
                                   [--pg-url URL] [--log-level LEVEL]

For each backend a fresh database is made (SQLite: a file in a temporary directory; PostgreSQL: a scratch database
``mpoxflow_bench_<pid>``, dropped at the end even on error), migrated and given a simulated clock at a fixed
instant (``engine.bootstrap.init_database(db, START)``, as ``mpoxflow init --simulated-clock`` does), so every date
is the same from run to run. It gets the users ``mpoxflow init`` leaves (``bench:admin``, first admin, and the
scheduler's ``timer``), then ``bench`` (staff), the actor of every change, and an API token for ``bench``
(``Accounts.issue_token``: a bearer token, so no login, no Argon2 and no CSRF on the timed path).

Set-up, not timed: N suspected cases (``--cases``, default 1,000), one person each, opened through the engine and
then confirmed, so the worklist holds 2N open tasks (each confirmed case's phone and written notifications, §3.1);
and 2 (R + W) more suspected cases for the transitions. The clock then moves an hour on.

The server is the product's own application (``entry.web.app.create_app(url)``: its own connection pool, one
engine per request on the database's clock, the bearer token looked up per request) under uvicorn
(``log_level="warning"``, no access log) in a background thread, on a free port of 127.0.0.1. The client is one
``httpx2`` (else ``httpx``) ``Client`` with keep-alive, sending ``Authorization: Bearer <secret>``. The Python side
is one ``Engine`` on the same database (``engine.bootstrap.engine_on``: the database's clock, persisted with every
change, as each request's engine does), called in the same process. Both sides run one at a time, never together.

Timed, R times each (``--requests``, default 200), after W warm-up calls each (``--warmup``, default 5, not
counted), the latency of each call measured on its own (``time.perf_counter``):

* worklist: ``GET /api/due`` (the response read and decoded as JSON) against ``Engine.worklist()``;
* transition: ``POST /api/cases/{id}/confirm`` ``{"pcr_on": ...}`` against
  ``Engine.apply(id, "confirm", data={"pcr_on": ...}, actor="bench")``, each call on a case of its own.

Throughput is R over the wall time of the R calls; p50 and p99 are nearest-rank percentiles of their latencies.
The ratios are http/python: the throughput ratio (below 1: what HTTP costs) and the p99 ratio (above 1).

Checked, any mismatch exits with status 1: every response has status 200; the HTTP worklist equals
``Engine.worklist()`` item for item and holds 2N tasks; every HTTP response to a confirm is the case in state
``confirmed``; afterwards every case confirmed by either side is confirmed, the worklist holds 2 tasks per
confirmed case, and ``Engine.audit_verify()`` finds every chain intact over the expected number of entries.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# Run as a script, this file's folder comes first on sys.path, and this very file would then shadow the standard
# library's `http` (which uvicorn and the client import), as transitions.py would shadow `transitions`: take the
# folder off, put the repository root on.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import DEFAULT_PG_URL, BenchFailure, exit_cleanly_on_sigterm, say, scratch_url  # noqa: E402

#: A Monday morning in Copenhagen: the cases are opened then; the timed calls run an hour later.
START = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
TIMED_AT = START + timedelta(hours=1)
ONSET = date(2025, 3, 1)
PCR_ON = date(2025, 3, 3)
#: The database's first admin (who registers the actor and issues its token) and the actor of every change.
ADMIN = "bench:admin"
ACTOR = "bench"


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``samples``."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n p / 100), at least the first
    return ordered[int(rank) - 1]


@dataclass
class Timing:
    """R calls: their wall time and each one's latency, in seconds."""

    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000


@dataclass
class Comparison:
    backend: str
    operation: str
    http: Timing
    python: Timing

    @property
    def n(self) -> int:
        return len(self.http.latencies)

    @property
    def rate_ratio(self) -> float:
        return self.http.rate / self.python.rate

    @property
    def p99_ratio(self) -> float:
        return self.http.p99_ms / self.python.p99_ms

    def lines(self) -> list[str]:
        head = f"{self.backend:<11} {self.operation:<24}"
        return [
            f"{head} http   {self.http.rate:8.1f} req/s    p50 {self.http.p50_ms:8.2f} ms   "
            f"p99 {self.http.p99_ms:8.2f} ms",
            f"{'':<11} {'':<24} python {self.python.rate:8.1f} calls/s  p50 {self.python.p50_ms:8.2f} ms   "
            f"p99 {self.python.p99_ms:8.2f} ms",
            f"{'':<11} {'':<24} http/python: throughput {self.rate_ratio:5.2f}, p99 {self.p99_ratio:5.2f}  "
            f"(N={self.n})",
        ]


def timed(calls: list[Callable[[], None]]) -> Timing:
    latencies = []
    started = time.perf_counter()
    for call in calls:
        before = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - before)
    return Timing(time.perf_counter() - started, latencies)


# ---- the server and its client -------------------------------------------------------------------------------


@contextmanager
def serving(url: str) -> Iterator[str]:
    """The product's application over ``url`` under uvicorn in a background thread, on a free port of
    127.0.0.1; yields its base URL; stopped (and its connection pool closed, by the lifespan) afterwards."""
    import uvicorn

    from entry.web.app import create_app

    app = create_app(url)
    # IPPROTO_TCP given, not left 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it
    # Nagle's algorithm and the client's delayed ACK add some 40 ms to every response (uvicorn writes its head
    # and body apart).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))  # the port is chosen by the system and held from now on: no race
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="bench-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise BenchFailure("the uvicorn server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
        if thread.is_alive():
            raise BenchFailure("the uvicorn server did not stop")


def http_client(base_url: str, secret: str) -> Any:
    """One client with keep-alive (a connection pool of one host), sending the bearer token."""
    try:
        import httpx2 as httpx
    except ImportError:  # pragma: no cover - the dev dependency is httpx2; plain httpx has the same API
        import httpx  # type: ignore[no-redef]
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=60)


def ok(response: Any) -> Any:
    if response.status_code != 200:
        raise BenchFailure(f"{response.request.method} {response.request.url.path}: status {response.status_code}, "
                           f"{response.text[:500]}")
    return response.json()


# ---- set-up (not timed) ---------------------------------------------------------------------------------------


def set_up(db: Any, cases: int, spare: int) -> tuple[str, list[str], list[str]]:
    """Users, the token, ``cases`` confirmed cases and ``spare`` suspected ones; returns the token's secret, the
    confirmed and the suspected cases' ids. The clock is then at TIMED_AT."""
    from engine.accounts import Accounts
    from engine.bootstrap import engine_on
    from workflows.definition import Settings

    engine = engine_on(db, Settings())
    engine.bootstrap_users(ADMIN)
    engine.add_user(ACTOR, "staff", actor=ADMIN)
    secret = Accounts(engine).issue_token(ACTOR, "bench/http.py", actor=ADMIN)["secret"]
    ids = []
    for i in range(cases + spare):
        person = engine.add_person(ref=f"BENCH-HTTP-{i}", actor=ACTOR)["id"]
        case = engine.open(
            "case", "open", person=person, actor=ACTOR,
            data={"onset": ONSET, "symptoms": ["rash"], "criteria": ["msm"]},
        )
        ids.append(case["id"])
    confirmed, suspected = ids[:cases], ids[cases:]
    for case_id in confirmed:
        engine.apply(case_id, "confirm", data={"pcr_on": PCR_ON}, actor=ACTOR)
    engine.simulated_clock.set(TIMED_AT)
    engine.save_clock()
    return secret, confirmed, suspected


# ---- the timed comparisons ----------------------------------------------------------------------------------


def compare_worklist(backend: str, engine: Any, client: Any, requests: int, warmup: int,
                     tasks: int) -> Comparison:
    expected = engine.worklist()
    if len(expected) != tasks:
        raise BenchFailure(f"the worklist holds {len(expected)} tasks (expected {tasks})")
    got = ok(client.get("/api/due"))
    if got != expected:
        raise BenchFailure("GET /api/due does not return what Engine.worklist() returns")
    say(f"{backend}: worklist of {tasks} tasks, {len(client.get('/api/due').content) / 1024:.0f} KiB of JSON")

    def over_http() -> None:
        if len(ok(client.get("/api/due"))) != tasks:
            raise BenchFailure("GET /api/due lost tasks")

    def in_python() -> None:
        if len(engine.worklist()) != tasks:
            raise BenchFailure("Engine.worklist() lost tasks")

    for _ in range(warmup):
        over_http()
        in_python()
    http = timed([over_http] * requests)
    python = timed([in_python] * requests)
    return Comparison(backend, f"worklist ({tasks} tasks)", http, python)


def compare_confirm(backend: str, engine: Any, client: Any, requests: int, warmup: int,
                    suspected: list[str]) -> Comparison:
    body = {"pcr_on": PCR_ON.isoformat()}

    def over_http(case_id: str) -> Callable[[], None]:
        def call() -> None:
            view = ok(client.post(f"/api/cases/{case_id}/confirm", json=body))
            if view.get("id") != case_id or view.get("state") != "confirmed":
                raise BenchFailure(f"POST /api/cases/{case_id}/confirm answered {str(view)[:300]}")
        return call

    def in_python(case_id: str) -> Callable[[], None]:
        def call() -> None:
            view = engine.apply(case_id, "confirm", data={"pcr_on": PCR_ON}, actor=ACTOR)
            if view.get("id") != case_id or view.get("state") != "confirmed":
                raise BenchFailure(f"Engine.apply({case_id}, 'confirm') returned {str(view)[:300]}")
        return call

    per_side = warmup + requests
    by_http, by_python = suspected[:per_side], suspected[per_side:2 * per_side]
    for case_id in by_http[:warmup]:
        over_http(case_id)()
    for case_id in by_python[:warmup]:
        in_python(case_id)()
    http = timed([over_http(case_id) for case_id in by_http[warmup:]])
    python = timed([in_python(case_id) for case_id in by_python[warmup:]])
    return Comparison(backend, "transition (confirm)", http, python)


# ---- one backend ---------------------------------------------------------------------------------------------


def run_backend(backend: str, cases: int, requests: int, warmup: int, pg_url: str) -> list[Comparison]:
    from engine.bootstrap import engine_on, init_database
    from persistence.database import Database
    from workflows.definition import Settings

    spare = 2 * (warmup + requests)
    with scratch_url(backend, pg_url) as url:
        db = Database(url)
        try:
            init_database(db, START)
            started = time.perf_counter()
            secret, confirmed, suspected = set_up(db, cases, spare)
            say(f"{backend}: set up {cases} confirmed and {spare} suspected cases in "
                f"{time.perf_counter() - started:.1f} s (not timed)")
            # The Python API's engine: on the database's clock, persisting it with each change, as the server's.
            engine = engine_on(db, Settings())
            with serving(url) as base_url, http_client(base_url, secret) as client:
                me = ok(client.get("/api/me"))
                if me.get("user") != ACTOR or me.get("via") != "token":
                    raise BenchFailure(f"GET /api/me with the token answered {me}")
                results = [
                    compare_worklist(backend, engine, client, requests, warmup, 2 * cases),
                    compare_confirm(backend, engine, client, requests, warmup, suspected),
                ]
            verify(engine, cases, spare)
            return results
        finally:
            db.dispose()


def verify(engine: Any, cases: int, spare: int) -> None:
    """Every case confirmed, 2 tasks each on the worklist, every audit chain intact."""
    total = cases + spare
    confirmed = len(engine.list("case", "confirmed"))
    tasks = len(engine.worklist())
    if confirmed != total or tasks != 2 * total:
        raise BenchFailure(f"after the run: {confirmed} confirmed cases (expected {total}), {tasks} tasks on the "
                           f"worklist (expected {2 * total})")
    # 2 entries of bootstrap_users, 1 of add_user, 1 of the token; per case: its person's, its opening, its confirm.
    expected = 4 + 3 * total
    report = engine.audit_verify()
    if not report["intact"] or report["entries"] != expected:
        raise BenchFailure(
            f"audit verify: intact {report['intact']}, {report['entries']} entries (expected {expected}), "
            f"{report['problem_count']} problems, the first: {report['problems'][:3]}"
        )


# ---- output --------------------------------------------------------------------------------------------------


def markdown(results: list[Comparison]) -> str:
    lines = [
        "| Backend | Operation | N | HTTP (req/s) | Python (calls/s) | HTTP / Python throughput "
        "| HTTP p50 (ms) | Python p50 (ms) | HTTP p99 (ms) | Python p99 (ms) | HTTP / Python p99 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.operation} | {r.n} | {r.http.rate:.1f} | {r.python.rate:.1f} | {r.rate_ratio:.2f} "
            f"| {r.http.p50_ms:.2f} | {r.python.p50_ms:.2f} | {r.http.p99_ms:.2f} | {r.python.p99_ms:.2f} "
            f"| {r.p99_ratio:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The worklist and a transition over HTTP (uvicorn, bearer token) against the Python API."
    )
    parser.add_argument("--cases", type=int, default=1000,
                        help="confirmed cases, 2 worklist tasks each (default 1000)")
    parser.add_argument("--requests", type=int, default=200,
                        help="timed calls per operation and side (default 200)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed calls per operation and side before the timed ones (default 5)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL,
        help="PostgreSQL URL whose database is used to create and drop the scratch database "
        "(default $MPOXFLOW_TEST_POSTGRES_URL or %(default)s)",
    )
    parser.add_argument("--log-level", default="warning", help="engine log level (default warning, as the CLI)")
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_cleanly_on_sigterm()

    import fastapi
    import sqlalchemy
    import uvicorn

    from entry.logs import configure_logging

    # The engine logs every transition and the server every request at info; keep warnings and above (on stderr).
    os.environ["MPOXFLOW_LOG_LEVEL"] = args.log_level
    configure_logging(level=args.log_level)

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    say(
        f"mpoxflow HTTP benchmark: {args.cases} cases, {args.requests} requests (+{args.warmup} warm-up) per "
        f"operation, Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, FastAPI "
        f"{fastapi.__version__}, uvicorn {uvicorn.__version__}, {os.cpu_count()} CPUs"
    )
    results: list[Comparison] = []
    try:
        for backend in backends:
            started = time.perf_counter()
            backend_results = run_backend(backend, args.cases, args.requests, args.warmup, args.pg_url)
            for result in backend_results:
                for line in result.lines():
                    say(line)
            say(f"{backend}: done in {time.perf_counter() - started:.1f} s")
            results += backend_results
    except BenchFailure as failure:
        print(f"bench/http.py: FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    say("")
    say(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
