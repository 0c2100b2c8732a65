"""Replay and ``--as-of`` on both backends: the log alone rebuilds every case, contact and course exactly as the
tables hold them, and each object as it was at any instant.

1. a property test: long random histories (cases, contacts, exposures, courses, refused triggers, clock steps that
   fire timers); every view seen along the way is what ``show --as-of`` rebuilds for that instant, and replay
   finds no difference; and a timer's retry bookkeeping, which only the timers table knows;
2. ``show --as-of`` between the transitions of one case (and a PrEP course), across the daylight-saving change,
   before the case existed (exit 4), and on a person (exit 2);
3. replay names each difference made to the tables in raw SQL (state, facts, version, timers, rows added or
   deleted, a timer row of an object that does not exist), and the CLI's ``audit replay --check`` exits 3 naming
   them (0 when untouched);
4. replay and ``--as-of`` change nothing.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from engine.clock import SimulatedClock
from engine.core import Engine, RetryPolicy
from persistence.database import Database
from scheduler.firing import advance_simulated_clock
from tests.conftest import START, pg_database
from tests.helpers import contents, person, pk
from tests.test_cli import cli, describe, doc
from workflows.case import CLADES, ISOLATION_MODES, SYMPTOMS
from workflows.contact import EXPOSURE_KINDS
from workflows.course import PREP_CRITERIA
from workflows.errors import Conflict, MpoxflowError, NotFound, UsageError

#: Replay and --as-of read back what each database stored (instants, JSON, the tampered rows): both backends.
pytestmark = pytest.mark.both_backends

D = date.fromisoformat
T = datetime.fromisoformat
DANISH = ZoneInfo("Europe/Copenhagen")
STAFF = "staff:test"
AUDITOR = "auditor:test"
KINDS = ("case", "contact", "course")
#: Triggers a person may pull on an existing object of each kind.
OWN_TRIGGERS = {
    "case": ("confirm", "discard", "isolate", "heal", "die", "notify", "consent", "source"),
    "contact": ("expose", "correct", "inform", "symptoms"),
    "course": ("dose", "decline"),
}
#: What ``as_of`` adds to ``show``'s view.
AS_OF_KEYS = ("as_of", "audit_seq")


# ---- helpers -------------------------------------------------------------------------------------------------


def local(day: date | str, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    """A wall-clock time in Copenhagen on ``day``."""
    day = D(day) if isinstance(day, str) else day
    return datetime.combine(day, time(hour, minute, second), tzinfo=DANISH)


def without_as_of(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in AS_OF_KEYS}


def all_views(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every case, contact and course as ``list`` shows it (one query per kind)."""
    return {v["id"]: v for kind in KINDS for v in engine.list(kind)}


def timer_status(view: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["status"] for t in view["timers"]}


def as_of(engine: Engine, object_id: str, when: datetime) -> dict[str, Any]:
    view = engine.show(object_id, as_of=when)
    assert view["as_of"] == when.astimezone(DANISH).isoformat()
    assert isinstance(view["audit_seq"], int)
    return view


@pytest.fixture
def fresh_db(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Callable[[], Any]:
    """A factory of fresh, migrated, seeded databases on the test's backend: one per hypothesis example, so that
    examples share nothing (each starts on an empty database and a clock of its own)."""
    backend = request.node.callspec.params["database_url"]
    numbers = itertools.count()
    template = request.getfixturevalue("sqlite_template" if backend == "sqlite" else "pg_pool")

    @contextmanager
    def make() -> Iterator[Database]:
        n = next(numbers)
        if backend == "sqlite":
            path = tmp_path / f"example-{n}.db"
            shutil.copyfile(template, path)
            database = Database(f"sqlite:///{path}")
            try:
                yield database
            finally:
                database.dispose()
                path.unlink()
            return
        with pg_database(template) as url:
            database = Database(url)
            try:
                yield database
            finally:
                database.dispose()

    return make


# ---- 1. property: every view seen is what --as-of rebuilds; replay matches -------------------------------------------


class Story:
    """One random history on one database: it applies random (often refused) triggers, moves the clock, and keeps
    a snapshot of ``show`` for every object each time it changed, at the instant it changed."""

    def __init__(self, engine: Engine, clock: SimulatedClock, data: st.DataObject) -> None:
        self.engine, self.clock, self.data = engine, clock, data
        self.refs = itertools.count()
        self.current: dict[str, dict[str, Any]] = {}
        #: (object id, instant) -> show's view: the last one taken at that instant (so after every change then).
        self.snapshots: dict[tuple[str, datetime], dict[str, Any]] = {}
        self.persons: list[str] = []
        self.refused = 0
        self.succeeded = 0

    # -- drawing ---------------------------------------------------------------------------------------------

    def draw(self, strategy: st.SearchStrategy[Any], label: str) -> Any:
        return self.data.draw(strategy, label=label)

    def today(self) -> date:
        return self.clock.now().astimezone(DANISH).date()

    def day_from(self, earliest: date | str | None, label: str, *, before: int = 0) -> date:
        """A day from ``earliest`` (minus ``before`` days) to today, sometimes tomorrow (to be refused)."""
        start = (D(earliest) if isinstance(earliest, str) else earliest or self.today()) - timedelta(days=before)
        span = max(0, (self.today() - start).days)
        return start + timedelta(days=self.draw(st.integers(0, span + 1) | st.just(span), label))

    def pick(self, kind: str | None = None) -> dict[str, Any] | None:
        """A random object (of ``kind``; ``confirmed case``: a case confirmed, or after that)."""
        if kind == "confirmed case":
            ids = sorted(i for i, v in self.current.items() if v["kind"] == "case" and v["confirmed_at"])
            if not ids:
                return self.pick("case")
        else:
            ids = sorted(i for i, v in self.current.items() if kind is None or v["kind"] == kind)
        if not ids:
            return None
        return self.current[self.draw(st.sampled_from(ids), f"a {kind or 'object'}")]

    def actor(self) -> str:
        """Now and then an auditor, whose change is refused (NotPermitted, audited on the auditor's chain)."""
        return self.draw(st.sampled_from([STAFF] * 12 + [AUDITOR]), "actor")

    def new_person(self) -> str:
        born = self.draw(st.none() | st.sampled_from([D("1965-05-01"), D("1990-06-15"), D("2016-02-01")]), "born")
        flags = self.draw(st.fixed_dictionaries({
            "immunocompromised": st.booleans(), "pregnant": st.just(False) | st.booleans(),
            "smallpox_vaccinated": st.booleans(), "previous_mpox": st.just(False) | st.booleans(),
        }), "person flags")
        made = person(self.engine, f"P-{next(self.refs)}", born=born, **flags)
        self.persons.append(made)
        return made

    def some_person(self) -> str:
        if not self.persons or self.draw(st.booleans(), "new person"):
            return self.new_person()
        return str(self.draw(st.sampled_from(self.persons), "existing person"))

    # -- recording -------------------------------------------------------------------------------------------

    def record(self) -> list[str]:
        """Snapshot (``show``) every object whose view changed since the last record, at the clock's now."""
        views = all_views(self.engine)
        changed = [i for i, v in views.items() if self.current.get(i) != v]
        now = self.clock.now()
        for object_id in changed:
            self.snapshots[(object_id, now)] = self.engine.show(object_id)
            assert self.snapshots[(object_id, now)] == views[object_id]  # show and list agree
        self.current = views
        return changed

    def attempt(self, what: str, change: Callable[[], Any]) -> None:
        """Run one change; a refusal (rule, guard, role, unknown id, bad usage) must change no object."""
        try:
            change()
        except Conflict:
            raise  # one writer: a conflict would be a bug
        except MpoxflowError as refused:
            self.refused += 1
            event(f"refused: {type(refused).__name__}")
            assert self.record() == [], f"the refused {what} changed objects"
            return
        self.succeeded += 1
        event(f"done: {what}")
        assert self.record(), f"{what} succeeded and changed nothing visible"

    def advance(self, to: datetime) -> None:
        """``advance_simulated_clock``, one firing instant at a time, with a snapshot after each."""
        while (due := self.engine.next_due(to)) is not None:
            if due > self.clock.now():
                self.clock.set(due)
            for fired in self.engine.fire_due():
                event(f"timer {fired.name}: {fired.status}")
            self.record()
        self.clock.set(to)
        self.record()

    # -- steps -----------------------------------------------------------------------------------------------

    def step(self) -> Any:
        self.advance(self.clock.now() + timedelta(
            minutes=self.draw(st.sampled_from([0, 0, 1, 5, 30, 60, 240]), "minutes before the step")))
        if sum(v["kind"] == "case" for v in self.current.values()) < 2:
            return self.step_open()
        action = self.draw(st.sampled_from([
            "open", "open", "case", "case", "case", "case", "contact", "contact", "contact-trigger",
            "contact-trigger", "offer", "course-trigger", "course-trigger", "advance", "advance", "nonsense",
            "timed-by-hand",
        ]), "action")
        return getattr(self, "step_" + action.replace("-", "_"))()

    def step_open(self) -> None:
        who = self.some_person()
        onset = self.day_from(self.today(), "onset", before=20)
        # Now and then without a symptom or a criterion: refused by the case definition.
        symptoms = self.draw(st.sampled_from([["rash"], ["fever", "rash"], ["proctitis"], []]), "symptoms")
        criteria = self.draw(st.sampled_from([["msm"], ["travel"], ["epi_link", "msm"], []]), "criteria")
        if self.draw(st.booleans(), "open confirmed"):
            data = {"onset": onset, "symptoms": symptoms, "criteria": criteria,
                    "pcr_on": self.day_from(onset, "pcr_on")}
            trigger = "open_confirmed"
        else:
            data, trigger = {"onset": onset, "symptoms": symptoms, "criteria": criteria}, "open"
        self.attempt(f"case {trigger}", lambda: self.engine.open("case", trigger, person=who, actor=self.actor(),
                                                                 data=data))

    def case_data(self, trigger: str, case: dict[str, Any]) -> dict[str, Any]:
        onset = case.get("onset") or str(self.today())
        if trigger == "confirm":
            return {"pcr_on": self.day_from(onset, "pcr_on", before=1),
                    "clade": self.draw(st.none() | st.sampled_from(CLADES), "clade")}
        if trigger == "isolate":
            return {"mode": self.draw(st.sampled_from(ISOLATION_MODES), "mode")}
        if trigger in ("heal", "die"):
            return {"on": self.day_from(onset, f"{trigger} on", before=1)}
        if trigger == "notify":
            return {"channel": self.draw(st.sampled_from(("phone", "written")), "channel")}
        if trigger == "consent":
            return {"tracing": self.draw(st.booleans() | st.just(True), "tracing")}
        if trigger == "source":
            other = self.pick("case")
            return {"case": other["id"] if other else "case-99",
                    "on": D(onset) - timedelta(days=self.draw(st.integers(0, 23), "source days before onset"))}
        return {}

    def step_case(self) -> None:
        case = self.pick("case")
        if case is None:
            return self.step_open()
        trigger = self.draw(st.sampled_from(
            ["confirm", "confirm", "discard", "isolate", "heal", "heal", "die", "notify", "notify", "consent",
             "consent", "source"]), "case trigger")
        data = self.case_data(trigger, case)
        self.attempt(f"case {trigger}", lambda: self.engine.apply(case["id"], trigger, data=data,
                                                                  actor=self.actor()))
        return None

    def step_contact(self) -> None:
        # Mostly a case that can have contacts (confirmed or later), sometimes any (refused while suspected).
        case = self.pick(self.draw(st.sampled_from(["confirmed case"] * 5 + ["case"]), "which cases"))
        if case is None:
            return self.step_open()
        who = self.draw(st.sampled_from(["other"] * 6 + ["the case's own"]), "whose contact")
        who = self.some_person() if who == "other" else case["person"]  # the case's own person: refused
        data = {
            "case": case["id"], "exposed": self.day_from(case["onset"], "exposed", before=1),
            "kind": self.draw(st.sampled_from(EXPOSURE_KINDS), "exposure kind"),
            "anonymous_via_doctor": self.draw(st.booleans(), "anonymous"), "risk": None, "reason": None,
        }
        if self.draw(st.sampled_from([False] * 6 + [True]), "clinician's risk"):
            data["risk"] = self.draw(st.sampled_from(("high", "medium", "low")), "risk")
            data["reason"] = self.draw(st.sampled_from((None, "assessed by the clinician")), "reason")
        self.attempt("contact add", lambda: self.engine.open("contact", "add", person=who, actor=self.actor(),
                                                             data=data))
        return None

    def contact_data(self, trigger: str, contact: dict[str, Any]) -> dict[str, Any]:
        exposed_on = contact.get("exposed_on") or str(self.today())
        if trigger == "expose":
            return {"exposed": self.day_from(exposed_on, "exposed", before=3),
                    "kind": self.draw(st.sampled_from(EXPOSURE_KINDS), "exposure kind")}
        if trigger == "correct":
            count = len(contact.get("exposures") or [])
            return {"exposed": self.day_from(exposed_on, "corrected", before=3),
                    "exposure": self.draw(st.none() | st.integers(0, count + 1), "exposure number")}
        if trigger == "symptoms":
            return {"onset": self.day_from(exposed_on, "symptoms onset", before=1),
                    "symptoms": self.draw(st.lists(st.sampled_from(SYMPTOMS), max_size=2, unique=True), "symptoms")}
        return {}

    def step_contact_trigger(self) -> None:
        contact = self.pick("contact")
        if contact is None:
            return self.step_contact()
        trigger = self.draw(st.sampled_from(["expose", "expose", "correct", "correct", "inform", "inform",
                                             "symptoms"]), "contact trigger")
        data = self.contact_data(trigger, contact)
        self.attempt(f"contact {trigger}", lambda: self.engine.apply(contact["id"], trigger, data=data,
                                                                     actor=self.actor()))
        return None

    def step_offer(self) -> None:
        contact = self.pick("contact")
        if contact is not None and self.draw(st.booleans(), "pep"):
            own = self.draw(st.sampled_from([True] * 5 + [False]), "the contact's own person")
            who = contact["person"] if own else self.some_person()
            data = {"indication": "pep", "contact": contact["id"], "criteria": [],
                    "assessed_by": self.draw(st.sampled_from(("dr:infection", None)), "PEP assessor")}
        else:
            who = self.some_person()
            data = {"indication": "prep",
                    "criteria": self.draw(st.lists(st.sampled_from(PREP_CRITERIA), max_size=2, unique=True),
                                          "prep criteria"),
                    "contact": None, "assessed_by": self.draw(st.sampled_from((None, "dr:infection")), "assessor"),
                    "criterion_on": self.day_from(self.today(), "criterion on", before=90)}
        self.attempt("course offer", lambda: self.engine.open("course", "offer", person=who, actor=self.actor(),
                                                              data=data))

    def step_course_trigger(self) -> None:
        course = self.pick("course")
        if course is None:
            return self.step_offer()
        trigger = self.draw(st.sampled_from(["dose", "dose", "dose", "decline"]), "course trigger")
        data: dict[str, Any] = {}
        if trigger == "dose":
            if course.get("dose1_on") and self.draw(st.booleans(), "dose 2 after 28 days"):
                on = D(course["dose1_on"]) + timedelta(days=self.draw(st.integers(26, 30), "dose 2 days after"))
            else:
                on = self.day_from(self.today(), "dose on", before=3)
            with_consent = self.draw(st.booleans() | st.just(True), "pep consent")
            data = {"on": on, "consent": with_consent,
                    "indication_note": "close contact, high risk" if with_consent else None,
                    "justification": "within the window" if with_consent else None,
                    "assessed_by": self.draw(st.sampled_from((None, "doctor:lund")), "assessed by"),
                    "special_reason": self.draw(st.sampled_from((None, "reached late")), "special reason")}
        self.attempt(f"course {trigger}", lambda: self.engine.apply(course["id"], trigger, data=data,
                                                                    actor=self.actor()))
        return None

    def step_advance(self) -> None:
        hours = self.draw(st.integers(1, 72) | st.integers(1, 40).map(lambda d: 24 * d), "hours")
        self.advance(self.clock.now() + timedelta(hours=hours))

    def step_timed_by_hand(self) -> None:
        """Staff pull a timed trigger before its timer is due. The engine API allows it (the CLI offers no command
        for it); when the timer later comes due its trigger is often no longer allowed, so the firing is
        ``skipped`` and audited as such: the one way a skipped firing happens in these workflows."""
        target = self.pick()
        if target is None:
            return self.step_open()
        pending = [t["name"] for t in target["timers"] if t["status"] == "pending"]
        if not pending:
            return self.step_advance()
        trigger = self.draw(st.sampled_from(sorted(pending)), "timed trigger")
        self.attempt(f"{target['kind']} {trigger} by hand", lambda: self.engine.apply(
            target["id"], trigger, data={"timer": None, "due_at": None, "fired_late_by_seconds": 0}, actor=STAFF))
        return None

    def step_nonsense(self) -> None:
        """An unknown trigger, a creation trigger on an existing object, a trigger of another workflow, or a
        trigger of its own workflow on an id that does not exist: always refused."""
        target = self.pick()
        if target is None:
            return self.step_open()
        trigger = self.draw(st.sampled_from(["fly", "open", "add", "offer", "confirm", "inform", "dose", "expose"]),
                            "nonsense trigger")
        object_id = target["id"]
        if trigger in OWN_TRIGGERS[target["kind"]]:
            object_id = f"{target['kind']}-{pk(object_id) + 1000}"  # no such object
        data = {"pcr_on": self.today(), "on": self.today(), "exposed": self.today(), "kind": "household",
                "consent": False, "indication_note": None, "justification": None, "assessed_by": None}
        self.attempt(f"nonsense {trigger}", lambda: self.engine.apply(object_id, trigger, data=data, actor=STAFF))
        return None

    # -- the checks ------------------------------------------------------------------------------------------

    def check(self) -> None:
        engine = self.engine
        assert self.current == all_views(engine)
        replay = engine.audit_replay()
        assert replay == {"matches": True, "objects": len(self.current), "differences": []}
        assert engine.audit_verify()["intact"] is True
        by_object: dict[str, list[tuple[datetime, dict[str, Any]]]] = {}
        for (object_id, at), view in self.snapshots.items():
            by_object.setdefault(object_id, []).append((at, view))
        for object_id, seen in by_object.items():
            seen.sort(key=lambda s: s[0])
            # Before its first snapshot (its creation) it did not exist.
            created = seen[0][0]
            assert seen[0][1]["created_at"] == created.astimezone(DANISH).isoformat()
            with pytest.raises(NotFound, match="did not exist yet"):
                engine.show(object_id, as_of=created - timedelta(microseconds=1))
            for i, (at, view) in enumerate(seen):
                # At the instant of a change: the view after every change made at that instant.
                assert without_as_of(as_of(engine, object_id, at)) == view, (object_id, at)
                # Just before the next change it still was as it was then: every entry changes the view (a
                # version, or a timer's status), and a snapshot was taken after each, so none lies in between.
                if i + 1 < len(seen):
                    just_before = seen[i + 1][0] - timedelta(microseconds=1)
                    assert without_as_of(as_of(engine, object_id, just_before)) == view, (object_id, just_before)
            # (No firing fails in these histories, so no timer carries retry bookkeeping: while a timer waits for
            # a retry, show has its attempts and --as-of cannot, see test_a_timer_retried_after_a_failed_firing...)
            # And now, long after its last change, it is as the tables hold it.
            assert without_as_of(as_of(engine, object_id, self.clock.now() + timedelta(days=365))) == \
                engine.show(object_id)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_property_every_view_seen_is_what_as_of_rebuilds_and_replay_matches(fresh_db, data):
    """A random history (cases opened, confirmed, discarded, isolated, healed, notified, consented, sourced;
    contacts added, exposed, corrected, informed, symptomatic; PrEP and PEP courses offered, dosed, declined;
    refused triggers of every kind; the clock moved by minutes to weeks, firing each timer at its due instant).
    Every ``show`` seen is what ``show --as-of`` rebuilds from the log for that instant; replay finds the tables
    exactly as the log describes them."""
    start = local(D("2025-03-03") + timedelta(days=data.draw(st.integers(0, 300), label="start day")),
                  data.draw(st.integers(7, 18), label="start hour"))
    with fresh_db() as db:
        clock = SimulatedClock(start)
        story = Story(Engine(db, clock), clock, data)
        for _ in range(data.draw(st.integers(20, 40), label="steps")):
            story.step()
        event(f"objects: {min(len(story.current) // 5 * 5, 20)}+")
        event(f"snapshots: {min(len(story.snapshots) // 10 * 10, 60)}+")
        event(f"changes made: {min(story.succeeded // 10 * 10, 30)}+; refused: {min(story.refused // 5 * 5, 15)}+")
        story.check()


def test_a_timer_retried_after_a_failed_firing_and_then_parked(db, clock, monkeypatch):
    """Retry bookkeeping: a firing that raises is rolled back and retried later; a retry is not a change of the
    object, so it writes no audit entry. While the timer waits for its retry, ``show`` has its ``attempts``,
    ``next_attempt_at`` and ``last_error`` from the timers table and ``--as-of`` (the log alone) cannot: it shows
    the timer pending without them; everything else agrees. Parked as ``failed`` after the last attempt, the
    parking is audited (attempts, error) and the two agree again. Replay compares a timer's name, status, rule,
    due and satisfied instants, never the retry columns: it matches throughout."""
    engine = Engine(db, clock)
    case = engine.open("case", "open_confirmed", person=person(engine, "REF-RETRY"), actor=STAFF, data={
        "onset": D("2025-03-01"), "symptoms": ["rash"], "criteria": [], "pcr_on": D("2025-03-02")})["id"]
    real_transition = engine.commands.transition

    def failing_transition(uow, **kwargs):
        if kwargs["trigger"] == "phone_notification_due":
            raise RuntimeError("the phone system is down")
        return real_transition(uow, **kwargs)

    monkeypatch.setattr(engine.commands, "transition", failing_transition)
    policy = RetryPolicy(max_attempts=3, first_backoff=timedelta(seconds=30))
    due = T("2025-03-03T17:00:00+01:00")
    for attempt, at in enumerate((due, due + timedelta(seconds=30)), start=1):
        clock.set(at)
        assert engine.fire_due(policy=policy) == []
        shown = engine.show(case)
        [phone] = [t for t in shown["timers"] if t["name"] == "phone_notification_due"]
        assert (phone["status"], phone["attempts"], phone["last_error"]) == (
            "pending", attempt, "RuntimeError: the phone system is down")
        rebuilt = without_as_of(as_of(engine, case, at))
        [logged] = [t for t in rebuilt["timers"] if t["name"] == "phone_notification_due"]
        assert logged == {k: v for k, v in phone.items() if k not in ("attempts", "next_attempt_at", "last_error")}
        assert {**rebuilt, "timers": []} == {**shown, "timers": []}
        assert engine.audit_replay()["matches"] is True
    clock.set(due + timedelta(seconds=90))
    assert engine.fire_due(policy=policy) == []
    shown = engine.show(case)
    [phone] = [t for t in shown["timers"] if t["name"] == "phone_notification_due"]
    assert (phone["status"], phone["attempts"], phone["next_attempt_at"]) == ("failed", 3, None)
    assert without_as_of(as_of(engine, case, clock.now())) == shown
    assert without_as_of(as_of(engine, case, clock.now() - timedelta(microseconds=1)))["timers"][0]["status"] == \
        "pending"
    assert engine.audit_replay() == {"matches": True, "objects": 1, "differences": []}


# ---- 2. --as-of between the transitions of one case ------------------------------------------------------------------

T1 = T("2025-03-10T09:00:00+01:00")  # opened
T2 = T("2025-03-12T10:00:00+01:00")  # confirmed: phone due 17:00 the same day, written 24 hours later
PHONE_DUE = T("2025-03-12T17:00:00+01:00")
WRITTEN_DUE = T("2025-03-13T10:00:00+01:00")
T3 = T("2025-03-28T11:00:00+01:00")  # isolated, before summer time (2025-03-30 02:00 -> 03:00)
T4 = T("2025-04-01T09:00:00+02:00")  # healed (on 2025-03-31), in summer time
CONDOM_ENDS = T("2025-06-24T00:00:00+02:00")  # 00:00 local on 2025-03-31 + 85 days
DOSE2_DUE = "2025-04-09T00:00:00+02:00"  # 00:00 local on 2025-03-12 + 28 days


def test_as_of_between_the_transitions_of_a_case_and_a_course(cli_db):
    db = Database(cli_db)
    try:
        clock = SimulatedClock(START)
        engine = Engine(db, clock)
        patient, partner = person(engine, "REF-PATIENT"), person(engine, "REF-PARTNER", born=D("1990-01-01"))
        # What show says at instants between the changes, taken while the story runs: the ground truth.
        seen: dict[datetime, dict[str, dict[str, Any]]] = {}

        def at(instant: datetime) -> None:
            advance_simulated_clock(engine, instant)
            seen[instant] = {i: engine.show(i) for i in ids}

        ids: list[str] = []
        at(T1 - timedelta(seconds=1))
        advance_simulated_clock(engine, T1)
        case = engine.open("case", "open", person=patient, actor=STAFF, data={
            "onset": D("2025-03-08"), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
        course = engine.open("course", "offer", person=partner, actor=STAFF, data={
            "indication": "prep", "contact": None, "criteria": ["msm_sti_24w"], "assessed_by": None,
            "criterion_on": D("2025-02-20")})["id"]
        ids.extend((case, course))
        at(T1)
        at(T("2025-03-11T12:00:00+01:00"))
        advance_simulated_clock(engine, T2)
        engine.apply(case, "confirm", data={"pcr_on": D("2025-03-11"), "clade": "Ib"}, actor=STAFF)
        engine.apply(course, "dose", actor=STAFF, data={"on": D("2025-03-12"), "consent": False,
                                                          "indication_note": None, "justification": None,
                                                          "assessed_by": None})
        at(T("2025-03-12T12:00:00+01:00"))
        at(PHONE_DUE - timedelta(seconds=1))
        at(PHONE_DUE)
        at(T("2025-03-12T18:00:00+01:00"))
        at(T("2025-03-20T12:00:00+01:00"))
        advance_simulated_clock(engine, T3)
        engine.apply(case, "isolate", data={"mode": "home"}, actor=STAFF)
        engine.apply(course, "decline", actor=STAFF, reason="does not want the second dose")
        at(T("2025-03-30T01:59:59+01:00"))  # the last second of winter time ...
        at(T("2025-03-30T03:30:00+02:00"))  # ... and an hour and a half later, in summer time
        advance_simulated_clock(engine, T4)
        engine.apply(case, "heal", data={"on": D("2025-03-31")}, actor=STAFF)
        at(T("2025-05-01T12:00:00+02:00"))
        at(CONDOM_ENDS - timedelta(seconds=1))
        at(CONDOM_ENDS)  # the timer fires at its own instant: closed
        at(T("2025-07-01T12:00:00+02:00"))
        assert engine.show(case)["state"] == "closed"

        # Every instant: the log rebuilds exactly what show said then.
        for instant, views in seen.items():
            for object_id, view in views.items():
                assert without_as_of(as_of(engine, object_id, instant)) == view, (object_id, instant)

        # The case, instant by instant: state, version, facts, timers.
        def case_at(instant: str) -> dict[str, Any]:
            return as_of(engine, case, T(instant))

        with pytest.raises(NotFound, match=rf"{case} did not exist yet at 2025-03-10T08:59:59\+01:00: it was "
                                           r"created at 2025-03-10T09:00:00\+01:00"):
            engine.show(case, as_of=T1 - timedelta(seconds=1))
        opened = case_at("2025-03-10T09:00:00+01:00")
        assert (opened["state"], opened["version"], opened["onset"], opened["pcr_on"],
                [(t["name"], t["status"], t["due_at"]) for t in opened["timers"]]) == (
            "suspected", 1, "2025-03-08", None, [("test_result_due", "pending", "2025-03-13T00:00:00+01:00")])
        assert case_at("2025-03-11T12:00:00+01:00") == {**opened, "as_of": "2025-03-11T12:00:00+01:00"}

        confirmed = case_at("2025-03-12T12:00:00+01:00")
        assert (confirmed["state"], confirmed["version"], confirmed["pcr_on"], confirmed["clade"],
                confirmed["confirmed_at"], confirmed["updated_at"], confirmed["isolation_mode"]) == (
            "confirmed", 2, "2025-03-11", "Ib", "2025-03-12T10:00:00+01:00", "2025-03-12T10:00:00+01:00", None)
        assert [(t["name"], t["due_at"], t["status"]) for t in confirmed["timers"]] == [
            ("phone_notification_due", "2025-03-12T17:00:00+01:00", "pending"),
            ("test_result_due", "2025-03-13T00:00:00+01:00", "cancelled"),  # done by the confirmation
            ("written_notification_due", "2025-03-13T10:00:00+01:00", "pending"),
            ("sequencing_sample_due", "2025-03-13T17:00:00+01:00", "pending")]  # §2.4: the next working day
        assert case_at("2025-03-12T16:59:59+01:00")["version"] == 2
        phoned = case_at("2025-03-12T17:00:00+01:00")  # the deadline's firing: an overdue record, a new version
        assert (phoned["state"], phoned["version"], timer_status(phoned)) == (
            "confirmed", 3, {"phone_notification_due": "missed", "test_result_due": "cancelled",
                             "written_notification_due": "pending", "sequencing_sample_due": "pending"})
        assert case_at("2025-03-12T18:00:00+01:00") == {**phoned, "as_of": "2025-03-12T18:00:00+01:00"}
        both = case_at("2025-03-20T12:00:00+01:00")
        assert (both["state"], both["version"], both["updated_at"], timer_status(both)) == (
            "confirmed", 5, "2025-03-13T17:00:00+01:00",
            {"phone_notification_due": "missed", "test_result_due": "cancelled", "written_notification_due": "missed",
             "sequencing_sample_due": "missed"})

        # Across the change to summer time: the same state on both sides; the instant is printed in local time.
        winter = case_at("2025-03-30T01:59:59+01:00")
        summer = case_at("2025-03-30T03:30:00+02:00")
        assert (summer["state"], summer["version"], summer["isolation_mode"], summer["updated_at"],
                summer["as_of"]) == ("isolated", 6, "home", "2025-03-28T11:00:00+01:00",
                                     "2025-03-30T03:30:00+02:00")
        assert without_as_of(winter) == without_as_of(summer)
        assert summer["audit_seq"] == winter["audit_seq"]
        # The same instant written in UTC is the same instant.
        assert engine.show(case, as_of=T("2025-03-30T01:30:00+00:00")) == summer

        healed = case_at("2025-05-01T12:00:00+02:00")
        assert (healed["state"], healed["version"], healed["healed_on"], healed["updated_at"]) == (
            "healed", 7, "2025-03-31", "2025-04-01T09:00:00+02:00")
        assert [(t["name"], t["due_at"], t["status"]) for t in healed["timers"]][-1] == (
            "condom_advice_ends", "2025-06-24T00:00:00+02:00", "pending")
        assert case_at("2025-06-23T23:59:59+02:00")["state"] == "healed"
        closed = case_at("2025-06-24T00:00:00+02:00")  # at the instant of the firing, inclusive
        assert (closed["state"], closed["version"], closed["updated_at"], timer_status(closed)) == (
            "closed", 8, "2025-06-24T00:00:00+02:00",
            {"phone_notification_due": "missed", "test_result_due": "cancelled", "written_notification_due": "missed",
             "sequencing_sample_due": "missed", "condom_advice_ends": "fired"})
        assert without_as_of(case_at("2025-12-24T12:00:00+01:00")) == engine.show(case)

        # The course: dose 2 pending, then cancelled by the decline (its task ended undone, never "done").
        dosed = as_of(engine, course, T("2025-03-20T12:00:00+01:00"))
        assert (dosed["state"], dosed["version"], dosed["dose1_on"]) == ("dose1_given", 2, "2025-03-12")
        [dose2] = dosed["timers"]
        assert (dose2["name"], dose2["due_at"], dose2["status"], dose2["satisfied_at"]) == (
            "dose2_due", DOSE2_DUE, "pending", None)
        declined = as_of(engine, course, T("2025-03-30T03:30:00+02:00"))
        assert (declined["state"], declined["version"], declined["ended_because"]) == ("declined", 3, "declined")
        [dose2] = declined["timers"]
        assert (dose2["status"], dose2["note"], dose2["satisfied_at"]) == (
            "cancelled", "cancelled by the transition", None)
        with pytest.raises(NotFound, match="did not exist yet"):
            engine.show(course, as_of=T1 - timedelta(microseconds=1))

        # The CLI: the same views; before creation exit 4; on a person exit 2.
        for instant in ("2025-03-12T12:00:00+01:00", "2025-03-30T03:30:00+02:00", "2025-03-30T01:30:00Z"):
            assert doc(cli_db, "show", case, "--as-of", instant) == engine.show(case, as_of=T(instant))
        assert doc(cli_db, "show", case, "--as-of", "2025-03-30")["version"] == 6  # a bare date: 00:00 local
        shown = cli(cli_db, "show", case, "--as-of", "2025-03-30T03:30:00+02:00")
        assert shown.exit_code == 0, describe(shown)
        assert (f"{case}  isolated  (case@SST-mpox-7.1, version 6)  as of 2025-03-30T03:30:00+02:00 (rebuilt from "
                f"the audit log up to seq {summer['audit_seq']})") in shown.stdout
        early = cli(cli_db, "show", case, "--as-of", "2025-03-10T08:59:59+01:00", "--json")
        assert early.exit_code == 4, describe(early)
        assert "did not exist yet at 2025-03-10T08:59:59+01:00" in early.stderr
        assert json.loads(early.stdout)["exit_code"] == 4
        on_person = cli(cli_db, "show", patient, "--as-of", "2025-03-20T12:00:00+01:00", "--json")
        assert on_person.exit_code == 2, describe(on_person)
        assert "--as-of shows cases, contacts and courses" in on_person.stderr
        with pytest.raises(UsageError, match="as_of shows cases, contacts and courses"):
            engine.show(patient, as_of=T("2025-03-20T12:00:00+01:00"))
        unknown = cli(cli_db, "show", "case-99", "--as-of", "2025-03-20T12:00:00+01:00")
        assert unknown.exit_code == 4, describe(unknown)
        assert "did not exist yet" not in unknown.stderr
    finally:
        db.dispose()


# ---- 3. replay names what was changed in the tables ------------------------------------------------------------------


def tampered_story(url: str) -> dict[str, Any]:
    """case-1: confirmed (clade IIb), isolated, its two notification timers pending; contact-1 of it; course-1, a
    PrEP course offered to a third person."""
    db = Database(url)
    try:
        clock = SimulatedClock(START)
        engine = Engine(db, clock)
        case = engine.open("case", "open", person=person(engine, "REF-CASE"), actor=STAFF, data={
            "onset": D("2025-03-01"), "symptoms": ["rash"], "criteria": ["msm"]})["id"]
        clock.set(START + timedelta(hours=1))
        engine.apply(case, "confirm", data={"pcr_on": D("2025-03-02"), "clade": "IIb"}, actor=STAFF)
        engine.apply(case, "consent", data={"tracing": True}, actor=STAFF)
        clock.set(START + timedelta(hours=2))
        engine.apply(case, "isolate", data={"mode": "home"}, actor=STAFF)
        contact = engine.open("contact", "add", person=person(engine, "REF-CONTACT"), actor=STAFF, data={
            "case": case, "exposed": D("2025-03-02"), "kind": "sexual"})["id"]
        course = engine.open("course", "offer", person=person(engine, "REF-PREP"), actor=STAFF, data={
            "indication": "prep", "contact": None, "criteria": ["msm_sti_24w"], "assessed_by": None,
            "criterion_on": D("2025-02-20")})["id"]
        assert (case, contact, course) == ("case-1", "contact-1", "course-1")
        view = engine.show(case)
        timers = {t["name"]: int(t["id"].removeprefix("timer-")) for t in view["timers"]}
        assert (view["state"], view["version"], sorted(timers)) == (
            "isolated", 4, ["phone_notification_due", "sequencing_sample_due", "test_result_due",
                            "written_notification_due"])
        assert engine.audit_replay() == {"matches": True, "objects": 3, "differences": []}
        return {"case": case, "contact": contact, "course": course, "phone": timers["phone_notification_due"],
                "written": timers["written_notification_due"], "contact_view": engine.show(contact)}
    finally:
        db.dispose()


def tamper(url: str, *statements: tuple[str, dict[str, Any]]) -> None:
    db = Database(url)
    try:
        with db.engine.begin() as connection:
            for sql, params in statements:
                connection.execute(text(sql), params)
    finally:
        db.dispose()


def replay_of(url: str) -> dict[str, Any]:
    db = Database(url)
    try:
        return Engine(db, SimulatedClock(START)).audit_replay()
    finally:
        db.dispose()


COURSE_COLUMNS = ("person_id, contact_id, indication, doses_planned, plan_rule, plan_reason, criteria, assessed_by, "
                  "exposure_on, dose1_on, dose2_on, consent, dose_assessments, ended_because, state, workflow, "
                  "version, created_at, updated_at")
#: (what is done to the tables, the difference replay must report). ``{case}``, ``{phone}`` ... are filled in.
TAMPERING = {
    "state": ("UPDATE cases SET state = 'healed' WHERE id = 1",
              {"object": "case-1", "field": "state", "log": "isolated", "table": "healed"}),
    "symptoms": ("UPDATE cases SET symptoms = '[\"fever\"]' WHERE id = 1",
                 {"object": "case-1", "field": "symptoms", "log": ["rash"], "table": ["fever"]}),
    "updated_at": ("UPDATE cases SET updated_at = :later WHERE id = 1",
                   {"object": "case-1", "field": "updated_at", "log": "2025-03-03T10:00:00+01:00",
                    "table": "2025-03-04T17:00:00+01:00"}),
    "clade": ("UPDATE cases SET clade = 'I' WHERE id = 1",
              {"object": "case-1", "field": "clade", "log": "IIb", "table": "I"}),
    "onset": ("UPDATE cases SET onset = '2025-02-27' WHERE id = 1",
              {"object": "case-1", "field": "onset", "log": "2025-03-01", "table": "2025-02-27"}),
    "isolation_mode": ("UPDATE cases SET isolation_mode = NULL WHERE id = 1",
                       {"object": "case-1", "field": "isolation_mode", "log": "home", "table": None}),
    "version": ("UPDATE cases SET version = version + 1 WHERE id = 1",
                {"object": "case-1", "field": "version", "log": 4, "table": 5}),
    "timer status": ("UPDATE timers SET status = 'cancelled' WHERE id = :phone",
                     {"object": "case-1 timer-{phone}", "field": "status", "log": "pending", "table": "cancelled"}),
    "timer due_at": ("UPDATE timers SET due_at = :later WHERE id = :phone",
                     {"object": "case-1 timer-{phone}", "field": "due_at", "log": "2025-03-03T17:00:00+01:00",
                      "table": "2025-03-04T17:00:00+01:00"}),
    "timer satisfied_at": ("UPDATE timers SET satisfied_at = :later WHERE id = :phone",
                           {"object": "case-1 timer-{phone}", "field": "satisfied_at", "log": None,
                            "table": "2025-03-04T17:00:00+01:00"}),
    "timer deleted": ("DELETE FROM timers WHERE id = :written",
                      {"object": "case-1 timer-{written}", "field": "timer", "log": "written_notification_due",
                       "table": None}),
    "contact risk": ("UPDATE contacts SET risk = 'low' WHERE id = 1",
                     {"object": "contact-1", "field": "risk", "log": "high", "table": "low"}),
    # A copy of course-1's row under a new id (before course-1's row is deleted, below).
    "course row inserted": (f"INSERT INTO courses ({COURSE_COLUMNS}) SELECT {COURSE_COLUMNS} FROM courses WHERE id = 1",
                            {"object": "course-2", "field": "object", "log": None,
                             "table": "a row with no audit entries"}),
    "course row deleted": ("DELETE FROM courses WHERE id = 1",
                           {"object": "course-1", "field": "object", "log": "1 entries", "table": None}),
}


def _params(story: dict[str, Any]) -> dict[str, Any]:
    return {"phone": story["phone"], "written": story["written"],
            "later": T("2025-03-04T17:00:00+01:00")}


def _expected(story: dict[str, Any], difference: dict[str, Any]) -> dict[str, Any]:
    return {**difference, "object": difference["object"].format(**story)}


def _sql_for(url: str, sql: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """SQLite keeps instants as naive UTC text; PostgreSQL as timestamptz."""
    used = {k: v for k, v in params.items() if f":{k}" in sql}
    if "later" in used and url.startswith("sqlite"):
        used["later"] = "2025-03-04 16:00:00.000000"
    return sql, used


@pytest.mark.parametrize("what", sorted(TAMPERING))
def test_replay_names_each_change_to_the_tables(cli_db, what):
    story = tampered_story(cli_db)
    sql, difference = TAMPERING[what]
    tamper(cli_db, _sql_for(cli_db, sql, _params(story)))
    found = replay_of(cli_db)
    assert (found["matches"], found["differences"]) == (False, [_expected(story, difference)])


def test_replay_names_every_change_and_the_cli_exits_3(cli_db):
    story = tampered_story(cli_db)
    untouched = cli(cli_db, "audit", "replay", "--check")
    assert untouched.exit_code == 0, describe(untouched)
    assert "the log rebuilds all 3 objects exactly as the tables hold them" in untouched.stdout
    assert doc(cli_db, "audit", "replay", "--check") == {"matches": True, "objects": 3, "differences": []}

    tamper(cli_db, *(_sql_for(cli_db, sql, _params(story)) for sql, _ in TAMPERING.values()))
    # The timer whose due_at was moved also had its status and satisfied_at changed: three differences; the
    # deleted one is one.
    expected = [_expected(story, d) for _, d in TAMPERING.values()]
    found = replay_of(cli_db)
    assert (found["matches"], found["objects"]) == (False, 4)  # course-1 (entries, no row) and course-2 (a row)
    for difference in expected:
        assert difference in found["differences"]

    result = cli(cli_db, "audit", "replay", "--check", "--json")
    assert result.exit_code == 3, describe(result)
    assert json.loads(result.stdout) == found
    result = cli(cli_db, "audit", "replay", "--check")
    assert result.exit_code == 3, describe(result)
    assert f"{len(found['differences'])} difference(s) between the log and the tables (4 objects):" in result.stdout
    for line in ("case-1  state: log 'isolated', table 'healed'", "case-1  clade: log 'IIb', table 'I'",
                 "case-1  onset: log '2025-03-01', table '2025-02-27'",
                 "case-1  isolation_mode: log 'home', table None", "case-1  version: log 4, table 5",
                 "case-1  symptoms: log ['rash'], table ['fever']",
                 "case-1  updated_at: log '2025-03-03T10:00:00+01:00', table '2025-03-04T17:00:00+01:00'",
                 f"case-1 timer-{story['phone']}  status: log 'pending', table 'cancelled'",
                 f"case-1 timer-{story['phone']}  due_at: log '2025-03-03T17:00:00+01:00', "
                 "table '2025-03-04T17:00:00+01:00'",
                 f"case-1 timer-{story['written']}  timer: log 'written_notification_due', table None",
                 "contact-1  risk: log 'high', table 'low'", "course-1  object: log '1 entries', table None",
                 "course-2  object: log None, table 'a row with no audit entries'"):
        assert line in result.stdout, result.stdout

    # Each change is named exactly once, nothing else: the object's own fields first (state, then its columns,
    # then version), then its timers by id, then the next object.
    assert found["differences"] == [_expected(story, TAMPERING[what][1]) for what in (
        "state", "onset", "symptoms", "clade", "isolation_mode", "version", "updated_at", "timer status",
        "timer due_at", "timer satisfied_at", "timer deleted", "contact risk", "course row deleted",
        "course row inserted")]


def test_replay_names_a_timer_row_the_log_never_armed(cli_db):
    story = tampered_story(cli_db)
    db = Database(cli_db)
    try:
        with db.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO timers (object_kind, object_id, name, due_at, rule, status, attempts, armed_at) "
                "VALUES ('case', 1, 'condom_advice_ends', :due, 'SST-mpox-7.1 §4.1', 'pending', 0, :due)"),
                {"due": "2025-06-01 22:00:00.000000" if cli_db.startswith("sqlite") else
                 T("2025-06-02T00:00:00+02:00")})
            forged = connection.execute(text("SELECT max(id) FROM timers")).scalar_one()
    finally:
        db.dispose()
    assert forged not in (story["phone"], story["written"])
    assert replay_of(cli_db)["differences"] == [
        {"object": f"case-1 timer-{forged}", "field": "timer", "log": None, "table": "condom_advice_ends"}]
    assert cli(cli_db, "audit", "replay", "--check").exit_code == 3


def test_replay_names_a_timer_row_of_an_object_that_does_not_exist(cli_db):
    """A pending timer row for case-50, which has neither a row nor an entry: the tables hold a timer the log never
    armed (and the scheduler would try to fire it), as for a timer row forged on an existing object (above)."""
    tampered_story(cli_db)
    db = Database(cli_db)
    try:
        with db.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO timers (object_kind, object_id, name, due_at, rule, status, attempts, armed_at) "
                "VALUES ('case', 50, 'condom_advice_ends', :due, 'SST-mpox-7.1 §4.1', 'pending', 0, :due)"),
                {"due": "2025-06-01 22:00:00.000000" if cli_db.startswith("sqlite") else
                 T("2025-06-02T00:00:00+02:00")})
            forged = connection.execute(text("SELECT max(id) FROM timers")).scalar_one()
    finally:
        db.dispose()
    found = replay_of(cli_db)
    assert found["matches"] is False, f"timer-{forged} of case-50 (no such case) went unnoticed: {found}"
    assert [(d["object"], d["field"]) for d in found["differences"]] == [(f"case-50 timer-{forged}", "timer")]
    assert cli(cli_db, "audit", "replay", "--check").exit_code == 3


# ---- 4. replay and --as-of change nothing ----------------------------------------------------------------------------


def test_replay_and_as_of_change_nothing(cli_db):
    story = tampered_story(cli_db)
    db = Database(cli_db)
    try:
        engine = Engine(db, SimulatedClock(START + timedelta(days=2)))
        before = contents(db)
        assert engine.audit_replay()["matches"] is True
        for instant in (START, START + timedelta(hours=1), START + timedelta(hours=2), START + timedelta(days=1)):
            engine.show(story["case"], as_of=instant)
            engine.show(story["contact"], as_of=instant + timedelta(hours=2))
        with pytest.raises(NotFound):
            engine.show(story["case"], as_of=START - timedelta(days=1))
        with pytest.raises(UsageError):
            engine.show("person-1", as_of=START)
        for args in (("audit", "replay", "--check"), ("audit", "replay", "--check", "--json"),
                     ("show", story["case"], "--as-of", "2025-03-03T10:00:00+01:00"),
                     ("show", story["contact"], "--as-of", "2025-03-04T10:00:00+01:00", "--json"),
                     ("show", story["case"], "--as-of", "2025-03-01")):
            result = cli(cli_db, *args)
            assert result.exit_code in (0, 4), describe(result)
        assert contents(db) == before
        # Also when replay finds differences.
        tamper(cli_db, ("UPDATE cases SET state = 'healed' WHERE id = 1", {}))
        before = contents(db)
        assert engine.audit_replay()["matches"] is False
        assert cli(cli_db, "audit", "replay", "--check").exit_code == 3
        assert contents(db) == before
    finally:
        db.dispose()
