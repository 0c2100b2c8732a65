"""Reads of personal data are audited (issue 19 item 3): who was shown a person's reference or birth date.

Every read the engine makes that puts a person's reference (or birth date) in its answer says so here
(``Reads.shown``): the worklist and its pages, ``list person``, search, ``show person-N``, a page of a case, contact
or course with the reference beside its person (``Queries.refs``), the hard-to-reach and changed-since-sent lists,
a notification document, FHIR (a Patient, ``$everything``, ``$export``, a document Bundle), an import's report file,
a webhook delivery that carries the person, a person's report. Each is one row of ``personal_reads``: when (the
clock's instant, and the wall clock's), who (the reader: ``Runtime.viewer``, or the actor of the change whose answer
shows the person), their role and first unit, which person (the internal id only: never a reference or a birth
date), what showed it, how (``via``) and the request or command it belongs to.

**Batched.** One request or command writes its persons once each (deduplicated; when one is shown more than one way,
the row names the most telling, ``PRECEDENCE``), in one INSERT statement (``insert_reads``) in a short
transaction of its own, before the answer leaves:

- an HTTP request's engine *holds* its reads (``begin(held=True)``): the request's middleware writes them when the
  answer starts (and before each further part of a streamed answer), so a page that asks the engine five times
  writes once; an answer that is an error drops them (an error shows no reference).
- the command line and the Python API write at the end of each engine call that showed a person (a command
  rarely makes more than one), before it returns.

**Audit first.** A read that cannot be recorded is not shown: when the write fails, the call (the command, the
request) fails with a ``StorageError`` (exit 1, HTTP 503) that says so, and nothing of the answer leaves. The
database that refuses this write refuses every change too, so staff could not act on what they saw anyway.

Reads without a reader (``Runtime.viewer`` None: the Python API, the worker) record nothing: no one looked. Rows
inside a bulk import's batch record nothing either: an import's answers hold no reference (its report file does,
``import``). The read log itself holds no personal data (internal ids only), so reading it is not a read of
personal data and is not logged; only auditors and admins may (``ReadLog``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, and_, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from engine.views import check_period, instant
from persistence.database import StorageError
from persistence.models import Membership, Person, PersonalRead, User
from persistence.repository import format_id, not_found, parse_id
from workflows.errors import MpoxflowError, NotPermitted, UsageError, because
from workflows.limits import MAX_ID, MAX_LIMIT, check_count, check_text, shown

READS = cast(Table, PersonalRead.__table__)
#: What showed the person (the ``what`` column): a list, worklist or search result (``ref``), a person's page or
#: view, a case's, a contact's or a course's page with the reference beside its person, FHIR, a notification
#: document (its Bundle holds the CPR number), an import's report file, a webhook delivery, a person's report.
WHAT = ("ref", "person", "case", "contact", "course", "fhir", "document", "import", "webhook", "report")
#: How it was shown: the command line, the pages, the API (and FHIR), the worker (a webhook delivery); the Python
#: API records as ``api``.
VIA = ("cli", "web", "api", "worker")
#: When a request shows a person more than one way, its one row names the most telling.
PRECEDENCE = {"ref": 0, "webhook": 1, "import": 2, "case": 3, "contact": 3, "course": 3, "person": 4,
              "document": 5, "fhir": 6, "report": 7}
#: Who may read the read log.
READER_ROLES = ("auditor", "admin")
#: The summaries (``--by``).
SUMMARIES = ("person", "user")
#: Rows (or summary lines) a read of the log gives when no limit is given.
DEFAULT_LIMIT = 100
#: Whether reads are recorded at all: a switch for ``bench/http.py`` alone (the worklist with and without the read
#: log in the same run), never a setting.
RECORDING = True


class _Runtime(Protocol):
    """What the recorder reads of ``engine.uow.Runtime`` (not imported: it holds the recorder)."""

    db: Any
    clock: Any
    wall_clock: Any
    viewer: str | None
    batch: Any
    known_users: dict[str, str]


def person_pk(person: int | str) -> int:
    """A person's internal id from ``person-N`` or the number itself."""
    if isinstance(person, int):
        return person
    return parse_id(person, kind="person")[1]


class Reads:
    """One engine's recorder (``Runtime.reads``): the persons shown, collected and written (see the module)."""

    def __init__(self, runtime: _Runtime) -> None:
        self.runtime = runtime
        #: How the reads come (``VIA``): the Python API unless an entry point says (``begin``).
        self.via = "api"
        #: The request or command the rows share (None: each engine call is its own, with a fresh id).
        self.request_id: str | None = None
        #: Held until ``flush`` (an HTTP request's engine), else written at the end of each call.
        self.held = False
        self._pending: dict[tuple[str, int], str] = {}
        self._written: set[tuple[str, int]] = set()
        self._as: str | None = None
        #: Who reads when the engine has no viewer (``begin``).
        self.reader: str | None = None

    def begin(self, *, via: str, request_id: str | None = None, held: bool = False,
              reader: str | None = None) -> Reads:
        """Group what follows as one request or command (its rows share ``request_id``, a person is written once),
        coming ``via`` the command line, the pages or the API; ``held``: written by ``flush`` only; ``reader``:
        who reads when the engine has no viewer (a command's user)."""
        if via not in VIA:
            raise ValueError(f"via {via!r}: one of {VIA}")
        self.via, self.request_id, self.held = via, request_id or uuid.uuid4().hex, held
        self.reader = reader
        self._pending, self._written = {}, set()
        return self

    @property
    def pending(self) -> int:
        """Persons shown and not written yet."""
        return len(self._pending)

    def shown(self, what: str, persons: Iterable[int | str | None], *, actor: str | None = None) -> None:
        """``persons`` (internal ids, or ``person-N``; None is skipped) were shown to ``actor`` (default: the
        reader, ``Runtime.viewer``) by ``what`` (``WHAT``). Written now unless held: ``flush``'s errors."""
        if what not in PRECEDENCE:
            raise ValueError(f"what {what!r}: one of {WHAT}")
        if not RECORDING or self.runtime.batch is not None:
            return
        actor = actor or self.runtime.viewer or self.reader
        if actor is None:
            return
        what = self._as or what
        for person in persons:
            if person is None:
                continue
            key = (actor, person_pk(person))
            if key in self._written:
                continue
            before = self._pending.get(key)
            if before is None or PRECEDENCE[what] > PRECEDENCE[before]:
                self._pending[key] = what
        if not self.held:
            self.flush()

    @contextmanager
    def showing_as(self, what: str) -> Iterator[None]:
        """What is shown inside is recorded as ``what`` (FHIR reads through the engine's own views)."""
        outer, self._as = self._as, what
        try:
            yield
        finally:
            self._as = outer

    def discard(self) -> None:
        """Drop what is held: the answer is an error, which shows no reference."""
        self._pending = {}

    def flush(self) -> int:
        """Write what is held, in one transaction (one INSERT statement); returns the rows written.
        ReadNotRecorded (a StorageError: exit 1, HTTP 503) when it cannot be written: what was to be shown must not
        be; NotPermitted for a reader who is no (enabled) user, UsageError for a name no user can have."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        request = self.request_id or uuid.uuid4().hex
        actors = {actor for actor, _ in pending}
        for actor in actors:  # a name no user can have is refused as malformed, never written
            check_text(actor, "as" if actor == self.runtime.viewer else "actor")
        try:
            at, recorded = self.runtime.clock.now(), self.runtime.wall_clock.now()
            with self.runtime.db.transaction() as session:
                who = _readers(session, actors, self.runtime.known_users)
                insert_reads(session, [
                    {"at": at, "recorded_at": recorded, "actor": actor, "role": who[actor][0],
                     "unit_id": who[actor][1], "person_id": pk, "what": what, "via": self.via,
                     "request_id": request}
                    for (actor, pk), what in pending.items()])
        except NotPermitted:
            raise
        except (MpoxflowError, SQLAlchemyError):  # whatever the database answered: not recorded, not shown
            raise ReadNotRecorded() from None
        if self.request_id is not None:
            self._written |= set(pending)
        return len(pending)


class ReadNotRecorded(StorageError):
    """The read log could not be written: the answer that would have shown a person is not given (exit 1, 503)."""

    def __init__(self) -> None:
        MpoxflowError.__init__(self, "the read could not be recorded in the read log, so nothing that shows a person's "
                         "reference was shown: try again in a moment; if it goes on, tell an admin (the database "
                         "refuses writes)", key="read_not_recorded")


def _readers(session: Any, actors: set[str], known: dict[str, str]) -> dict[str, tuple[str, int | None]]:
    """Each reader's role and first unit (the unit they read through), from one query. NotPermitted for a name
    that is no user (nothing is shown to no one: a webhook's rows are written by ``insert_reads`` directly)."""
    users, memberships = cast(Table, User.__table__), cast(Table, Membership.__table__)
    found: dict[str, tuple[str, int | None]] = {}
    for name, role, disabled_at, unit in session.execute(
            select(users.c.name, users.c.role, users.c.disabled_at, memberships.c.unit_id)
            .outerjoin(memberships, memberships.c.user_id == users.c.id)
            .where(users.c.name.in_(sorted(actors))).order_by(users.c.name, memberships.c.id)):
        if disabled_at is not None:
            raise NotPermitted(because("%(name)s is disabled, so nothing that shows a person can be shown; ask an "
                                       "admin", name=name), actor=name, role=role, user=None, command="read",
                               target=None)
        found.setdefault(name, (role, unit))
    for actor in sorted(actors - set(found)):
        if actor not in known:
            raise NotPermitted(because(
                "'%(name)s' is not a user of this database, so nothing that shows a person can be shown: read as a "
                "registered user with ⟦as⟧ (or $MPOXFLOW_ACTOR; `mpoxflow user list` shows who there is)",
                name=shown(actor)), actor=actor, role=None, user=None, command="read", target=None)
        found[actor] = (known[actor], None)
    return {actor: found[actor] for actor in actors}


def insert_reads(session: Any, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` to the read log in the caller's transaction: one multi-row ``INSERT ... VALUES (...), (...)
    RETURNING id`` (SQLAlchemy's "insertmanyvalues", on both backends: up to 1,000 rows a statement, from one
    compiled form, cached). Not ``insert().values(rows)``: that statement is compiled anew for every number of
    rows, some 10 to 20 ms for 100; nor a plain ``executemany``, which psycopg sends as one INSERT a row."""
    if rows:
        session.execute(insert(READS).returning(READS.c.id), rows).all()


def read_view(row: Any) -> dict[str, Any]:
    """One row of the read log as printed: internal ids only."""
    return {"id": format_id("read", row.id), "at": instant(row.at), "recorded_at": instant(row.recorded_at),
            "actor": row.actor, "role": row.role,
            "unit": None if row.unit_id is None else format_id("unit", row.unit_id),
            "person": format_id("person", row.person_id), "what": row.what, "via": row.via,
            "request": row.request_id}


class ReadLog:
    """Reading the read log (``mpoxflow reads``, ``/reads``, ``GET /api/reads``): its rows, newest first, or a
    summary per person (how many reads, by how many users, the first and the last) or per user (how many reads of
    how many persons). Auditors and admins only (the reader is ``Runtime.viewer``; None: the Python API)."""

    def __init__(self, runtime: _Runtime) -> None:
        self.runtime = runtime

    def read(self, *, person: str | None = None, user: str | None = None, since: datetime | None = None,
             before: datetime | None = None, by: str | None = None, limit: int = DEFAULT_LIMIT,
             older_than: int | None = None) -> dict[str, Any]:
        """``{"by", "items", "older"}``: the rows (``by`` None; newest first, keyset-paged by ``older_than``, the
        ``older`` of the page before) or the summary ``by`` person or user, of ``person``'s reads, ``user``'s, from
        ``since`` (inclusive) to ``before`` (exclusive), at most ``limit``. UsageError naming the field for
        anything malformed (checked first), NotPermitted for a reader who is no auditor or admin, NotFound for a
        person or a user there is none of."""
        pk = None if person is None else parse_id(_text(person, "person"), kind="person")[1]
        if user is not None:
            check_text(_text(user, "user"), "user")
        check_period(since, before)
        if by is not None and by not in SUMMARIES:
            raise UsageError(f"⟦by⟧ '{shown(str(by))}' is no summary: use one of {', '.join(SUMMARIES)}")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise UsageError(f"⟦limit⟧: give a whole number from 1 to {MAX_LIMIT}")
        check_count(limit, "⟦limit⟧", low=1, high=MAX_LIMIT)
        check_count(older_than, "⟦older_than⟧", low=0, high=MAX_ID)
        if older_than is not None and by is not None:
            raise UsageError("⟦older_than⟧ pages the rows, not a summary: leave out ⟦by⟧ or ⟦older_than⟧")
        with self.runtime.db.reading() as session:
            self.check_reader(session)
            if pk is not None and session.get(Person, pk) is None:
                raise not_found(format_id("person", pk), "person")
            if user is not None and not _known_reader(session, user):
                raise not_found(shown(user), "user")
            where = [c for c in (
                None if pk is None else READS.c.person_id == pk, None if user is None else READS.c.actor == user,
                None if since is None else READS.c.at >= since, None if before is None else READS.c.at < before)
                if c is not None]
            if by is None:
                if older_than is not None:
                    where.append(READS.c.id < older_than)
                rows = list(session.execute(select(READS).where(and_(True, *where))
                                            .order_by(READS.c.id.desc()).limit(limit + 1)))
                items = [read_view(r) for r in rows[:limit]]
                older = rows[limit - 1].id if len(rows) > limit else None
                return {"by": None, "items": items, "older": older}
            return {"by": by, "items": _summary(session, by, where, limit), "older": None}

    def check(self) -> None:
        """NotPermitted unless the reader may read the read log (``check_reader``): a page asks before anything
        else."""
        with self.runtime.db.reading() as session:
            self.check_reader(session)

    def check_reader(self, session: Any) -> None:
        """NotPermitted unless the reader is an auditor or an admin (not audited: a refused read writes nothing,
        as every refused read)."""
        viewer = self.runtime.viewer
        if viewer is None:
            return
        check_text(viewer, "as")
        role = self.runtime.known_users.get(viewer)
        if role is None:
            found = session.execute(select(User.role, User.disabled_at).where(User.name == viewer)).first()
            if found is None or found.disabled_at is not None:
                raise NotPermitted(because(
                    "'%(name)s' is not an enabled user of this database, so the read log cannot be shown: read as "
                    "an auditor or an admin with ⟦as⟧ (or $MPOXFLOW_ACTOR)", name=shown(viewer)),
                    actor=viewer, role=None, user=None, command="reads", target=None)
            role = found.role
        if role not in READER_ROLES:
            raise NotPermitted(because(
                "the read log (who was shown which person's reference) is for auditors and admins; %(name)s is "
                "%(role)s: ask an auditor", name=shown(viewer), role=role),
                actor=viewer, role=role, user=None, command="reads", target=None)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"⟦{name}⟧: give a text")
    return value.strip()


def _known_reader(session: Any, name: str) -> bool:
    """A user by that name, or a reader the log names (a webhook, a user since renamed or gone)."""
    if session.execute(select(User.id).where(User.name == name)).first() is not None:
        return True
    return session.execute(select(READS.c.id).where(READS.c.actor == name).limit(1)).first() is not None


def _summary(session: Any, by: str, where: list[Any], limit: int) -> list[dict[str, Any]]:
    """Per person: reads, distinct users, first and last; per user: reads, distinct persons, first and last. Most
    reads first, then by person id (user name)."""
    key = READS.c.person_id if by == "person" else READS.c.actor
    other = READS.c.actor if by == "person" else READS.c.person_id
    reads = func.count().label("reads")
    query = (select(key, reads, func.count(other.distinct()).label("others"), func.min(READS.c.at).label("first"),
                    func.max(READS.c.at).label("last"))
             .where(and_(True, *where)).group_by(key).order_by(reads.desc(), key).limit(limit))
    found = []
    for row in session.execute(query):
        if by == "person":
            found.append({"person": format_id("person", row[0]), "reads": row.reads, "users": row.others,
                          "first": instant(row.first), "last": instant(row.last)})
        else:
            found.append({"user": row[0], "reads": row.reads, "persons": row.others, "first": instant(row.first),
                          "last": instant(row.last)})
    return found
