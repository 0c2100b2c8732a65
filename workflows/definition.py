"""The shape every workflow shares: a table of transitions that cite the guideline, run by one `transitions`
Machine per workflow definition (never one per object: binding an object to the shared machine costs
microseconds, building a machine per object costs milliseconds and memory).

A workflow object is seen by the machine as a :class:`Subject`: its state, its facts (a plain dataclass of
the workflow), the instant of the change and the data given. Guards are pure: they return the reason they
refuse, or ``None``. Effects change the facts and say which timers to arm, cancel or mark satisfied; the
engine turns those into rows in the same transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from transitions import Machine, MachineError

from workflows.errors import (
    FIELD_REF,
    DefinitionError,
    GuardRefused,
    RuleRefused,
    TriggerNotAllowed,
    because,
    refusal_params,
)
from workflows.rules import cites_a_section, section_of

#: The state of an object before it exists; creation triggers leave it. Never stored.
NEW = "new"
#: The trigger that moves an open object to a later definition (``workflow migrate``, issue 20): an internal
#: transition of the new definition, from the state its ``state_map`` gives, that keeps that state; its guards
#: are the new rules' conditions on the object's facts, its effect arms the timers the new rules compute.
MIGRATED = "migrated"


def not_loaded(name: str) -> RuleRefused:
    """The refusal for a definition asked for by name that this process has not loaded (``registry.BY_NAME``)."""
    return RuleRefused(because("%(name)s is not loaded here: an object recorded under it runs only under it; load it "
                               "in every process of the deployment (MPOXFLOW_DEFINITIONS) and try again", name=name),
                       key="definition_not_loaded")


def _no_holidays(day: date) -> bool:
    return False


@dataclass(frozen=True)
class Settings:
    """Deployment choices the guideline leaves open (each a **Decision** in README)."""

    #: §3.1 "straks, inden for dagstid": the local daytime window (start, end) on working days in which STPS is
    #: phoned; a case confirmed outside it is due by the end of the next one.
    daytime_starts: time = time(8, 0)
    working_day_ends: time = time(17, 0)
    #: Working days: Monday (0) to Friday (4), less ``is_holiday`` (the engine passes Danish public holidays).
    working_weekdays: frozenset[int] = frozenset(range(5))
    is_holiday: Callable[[date], bool] = _no_holidays
    #: §6.4 sets no upper limit for dose 2: after how long a due dose 2 shows as overdue in the worklist.
    dose2_overdue_after: timedelta = timedelta(days=14)
    #: §6.2: after a PEP window closes, how long a dose 1 given inside the window may still be recorded before
    #: the offered course is cancelled (a dose on day 14 entered the next morning).
    pep_late_entry_grace: timedelta = timedelta(days=7)
    #: §2.1, §2.2.1 a suspected case waits for its PCR answer: after how many Danish calendar days from its opening
    #: the task "chase the test result" falls due (a window of N days from the opening day: its last day is D+N).
    test_result_chase_days: int = 2

    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.working_weekdays and not self.is_holiday(day)


@dataclass(frozen=True)
class TimerSpec:
    """A timer a transition arms. When due, the engine fires the trigger of the same name.

    ``task`` marks a deadline for staff: it shows in the worklist until satisfied, overdue once due.
    """

    name: str
    due_at: datetime
    rule: str
    task: str | None = None
    #: When the task turns overdue in the worklist (default: at ``due_at``).
    overdue_at: datetime | None = None


@dataclass(frozen=True)
class Timer:
    """A timer a definition's effects may arm (a :class:`TimerSpec` of this ``name``): when due, the engine fires
    the timed transition of the same name. Every definition declares its timers, so that a timed trigger without
    a timer, or a timer nothing fires, is refused when the definition is built, and two definitions can be
    compared (``workflows.diff``)."""

    name: str
    rule: str
    #: How long after ``after`` the timer falls due, when the guideline (or a Decision) fixes a period; None when
    #: the due instant is computed otherwise (the end of a daytime window, a deployment setting).
    period: timedelta | None = None
    #: What the period counts from, or how the due instant is computed when there is no period.
    after: str = ""


@dataclass(frozen=True)
class Related:
    """Another object a transition's guards and effects read (loaded by the engine): ``case-3`` and its facts."""

    id: str
    pk: int
    state: str
    facts: Any
    #: The person the object is about (``person-N``).
    person: str


@dataclass(frozen=True)
class Spawn:
    """A new object a transition creates in the same transaction; its id is written to the fact ``link``."""

    kind: str
    trigger: str
    data: Mapping[str, Any]
    link: str


@dataclass(frozen=True)
class Cascade:
    """A trigger this transition pulls on other objects in the same transaction: the object ``pk`` of ``kind``,
    or (``pk`` None) every ``kind`` object of the same person in one of ``states`` (and matching ``match``)."""

    kind: str
    trigger: str
    states: tuple[str, ...] = ()
    pk: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    #: With ``pk`` None: only those objects whose columns equal these values (``{"contact_id": 7}``).
    match: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Subject:
    """What the shared machine is bound to while one trigger runs."""

    object_id: str
    state: str
    facts: Any
    now: datetime
    settings: Settings
    data: Mapping[str, Any] = field(default_factory=dict)
    #: The person the object is about (``person-N``).
    person: str | None = None
    #: Related objects by the data key that names them (see ``TransitionSpec.references``).
    context: Mapping[str, Related] = field(default_factory=dict)
    armed: list[TimerSpec] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)
    satisfied: set[str] = field(default_factory=set)
    spawned: list[Spawn] = field(default_factory=list)
    cascades: list[Cascade] = field(default_factory=list)
    #: Objects that belong to this one, by kind (``TransitionSpec.linked``: a case's contacts).
    linked: Mapping[str, tuple[Related, ...]] = field(default_factory=dict)
    #: What the effect adds to the audit entry's data besides the data given (a correction's values before it).
    audit_data: dict[str, Any] = field(default_factory=dict)
    #: The timers the definition running this object declares (set by ``WorkflowDefinition.fire``): its guards
    #: and effects compute a due instant from the period declared there (:meth:`days`), so that an object under
    #: a later definition (monitoring of 14 days) is run by that definition's periods, not the module's constants.
    timers: Mapping[str, Timer] = field(default_factory=dict)

    def days(self, timer: str, default: int) -> int:
        """The period in days the running definition declares for ``timer`` (``default``: the module's own, when
        the subject runs outside a definition, or the timer declares no period)."""
        declared = self.timers.get(timer)
        if declared is None or declared.period is None:
            return default
        return declared.period.days

    def cascade(self, cascade: Cascade) -> None:
        """Pull a trigger on other objects, in this transaction, after this object is written."""
        self.cascades.append(cascade)

    def spawn(self, *, kind: str, trigger: str, data: Mapping[str, Any], link: str) -> None:
        """Create a ``kind`` object for the same person through ``trigger``, in this transaction."""
        self.spawned.append(Spawn(kind, trigger, data, link))

    def arm_timer(self, timer: TimerSpec) -> None:
        """Arm ``timer``; a pending timer of the same name is replaced (cancelled, then armed anew)."""
        self.armed = [t for t in self.armed if t.name != timer.name] + [timer]

    def cancel_timer(self, name: str) -> None:
        self.cancelled.add(name)
        self.armed = [t for t in self.armed if t.name != name]

    def satisfy_timer(self, name: str) -> None:
        """The task behind a deadline timer is done: it leaves the worklist and will not fire."""
        self.satisfied.add(name)


#: A guard returns why it refuses, or None when the transition may go ahead.
GuardCheck = Callable[[Subject, Mapping[str, Any]], "str | None"]
Effect = Callable[[Subject, Mapping[str, Any]], None]


@dataclass(frozen=True)
class Guard:
    rule: str
    check: GuardCheck


@dataclass(frozen=True)
class TransitionSpec:
    """One row of a workflow's table. ``dest=None`` is an internal transition: the state stays."""

    trigger: str
    source: tuple[str, ...]
    dest: str | None
    rule: str
    summary: str
    guards: tuple[Guard, ...] = ()
    effect: Effect | None = None
    #: Fired by a timer of the same name rather than by a person.
    timed: bool = False
    #: Pulled by another object's transition (a ``Cascade``), never by a person: not offered as allowed.
    internal: bool = False
    #: Other objects the guards read, by kind: the id is the data key of that name, or else the object's own
    #: ``<kind>_id`` column (a contact's case); ``person`` is always the object's own person.
    references: tuple[str, ...] = ()
    #: Objects of these kinds that belong to this one (their ``<own kind>_id`` column is its id), loaded for the
    #: guards into ``Subject.linked`` (a case's contacts, when a correction moves its infectious period).
    linked: tuple[str, ...] = ()
    #: Chooses between transitions of one trigger from one state (pure, no refusal): tried in table order.
    when: Callable[[Subject], bool] | None = None


def _run_guard(guard: Guard) -> Callable[[Any], bool]:
    def condition(event: Any) -> bool:
        subject: Subject = event.model
        refusal = guard.check(subject, subject.data)
        if refusal is not None:
            raise GuardRefused(f"{refusal} ({guard.rule})", rule=guard.rule, key=_guard_key(guard, refusal),
                               params={"object": subject.object_id, "trigger": event.event.name,
                                       "state": subject.state, "fields": FIELD_REF.findall(refusal),
                                       **refusal_params(refusal)})
        return True

    return condition


def _guard_key(guard: Guard, refusal: str) -> str:
    """A refusal's message key: the guard's own name (``pep_needs_assessor``), stable across wording changes; a
    guard made by a factory (``_named("decided_by", ...)``) adds the fields its refusal names."""
    qualname = getattr(guard.check, "__qualname__", "") or "guard"
    name = qualname.split(".<locals>")[0].strip("_").replace(".", "_") or "guard"
    if "<locals>" in qualname:
        name = "_".join([name, *FIELD_REF.findall(refusal)])
    return name


def _choose(when: Callable[[Subject], bool]) -> Callable[[Any], bool]:
    def condition(event: Any) -> bool:
        return when(event.model)

    return condition


def _run_effect(effect: Effect) -> Callable[[Any], None]:
    def callback(event: Any) -> None:
        subject: Subject = event.model
        effect(subject, subject.data)

    return callback


class WorkflowDefinition:
    """A versioned workflow (``case@SST-mpox-7.1``) and the one machine that runs all its objects.

    The definition is checked when built (:meth:`check`): a definition that is not sound raises
    :class:`DefinitionError`, so the module that declares it cannot be imported."""

    def __init__(
        self,
        *,
        kind: str,
        version: str,
        facts: type,
        states: Iterable[str],
        final: Iterable[str],
        transitions: Iterable[TransitionSpec],
        timers: Iterable[Timer] = (),
        identity: tuple[str, ...] = (),
        identity_rule: str | None = None,
        revision: int = 1,
        migrates_from: WorkflowDefinition | None = None,
        state_map: Mapping[str, str | None] | None = None,
    ) -> None:
        self.kind = kind
        self.version = version
        #: A corrected reading of the same guideline version (1, 2, ...); a new guideline has a new ``version``.
        self.revision = revision
        self.facts = facts
        self.states = tuple(states)
        self.final = frozenset(final)
        #: The timers its effects may arm, by name (each fired as the timed transition of its name).
        self.timers: dict[str, Timer] = {}
        self._declared_twice: list[str] = []
        for timer in timers:
            if timer.name in self.timers:
                self._declared_twice.append(timer.name)
            self.timers[timer.name] = timer
        #: Facts that, with the person, identify an object: a second one with the same values is refused.
        self.identity = identity
        self.identity_rule = identity_rule
        #: The definition whose open objects may move to this one, and the state each of its states maps to (None:
        #: its objects in that state are not migrated, they finish under the rules they started with).
        self.migrates_from = migrates_from
        self.state_map: dict[str, str | None] = dict(state_map or {})
        self.transitions = tuple(transitions)
        self._by_trigger: dict[str, list[TransitionSpec]] = {}
        for spec in self.transitions:
            self._by_trigger.setdefault(spec.trigger, []).append(spec)
        self.check()
        self._lock = threading.Lock()
        self.machine = Machine(
            model=None,
            states=[NEW, *self.states],
            transitions=[self._machine_row(spec) for spec in self.transitions],
            initial=NEW,
            auto_transitions=False,
            send_event=True,
        )

    @property
    def name(self) -> str:
        """``contact@SST-mpox-7.1``; a later revision of the same version adds it: ``contact@SST-mpox-7.1-r2``."""
        suffix = f"-r{self.revision}" if self.revision != 1 else ""
        return f"{self.kind}@{self.version}{suffix}"

    @staticmethod
    def _machine_row(spec: TransitionSpec) -> dict[str, Any]:
        chooses = [_choose(spec.when)] if spec.when is not None else []
        return {
            "trigger": spec.trigger,
            "source": list(spec.source),
            "dest": spec.dest,
            "conditions": [*chooses, *(_run_guard(g) for g in spec.guards)],
            "after": [_run_effect(spec.effect)] if spec.effect else [],
        }

    def spec(self, trigger: str, state: str, subject: Subject | None = None) -> TransitionSpec | None:
        """The transition ``trigger`` takes from ``state`` (for ``subject``, where ``when`` chooses), if any."""
        for spec in self._by_trigger.get(trigger, []):
            if state in spec.source and (spec.when is None or subject is None or spec.when(subject)):
                return spec
        return None

    def rule_of(self, trigger: str, state: str) -> str:
        """The section the transition for ``trigger`` from ``state`` cites."""
        spec = self.spec(trigger, state)
        if spec is None:
            raise KeyError((trigger, state))
        return spec.rule

    def triggers_from(self, state: str, *, include_timed: bool = False) -> list[str]:
        return sorted(
            {s.trigger for s in self.transitions
             if state in s.source and (include_timed or not (s.timed or s.internal))}
        )

    def has_trigger(self, trigger: str) -> bool:
        return trigger in self._by_trigger

    def fire(self, subject: Subject, trigger: str) -> None:
        """Run ``trigger`` on ``subject`` through the shared machine: guards, state change, effects.

        Raises TriggerNotAllowed when the trigger does not exist in the subject's state, GuardRefused when a
        guard refuses. On either, the subject's state is unchanged.
        """
        specs = self._by_trigger.get(trigger, [])
        if not any(subject.state in s.source for s in specs):
            raise TriggerNotAllowed(
                subject.object_id, trigger, subject.state, self.triggers_from(subject.state),
                rule=specs[0].rule if specs else None,
            )
        # The event is triggered on the subject directly: the machine reads and writes its ``state`` attribute
        # and calls the table's conditions and callbacks with it. ``add_model`` would also attach a method per
        # trigger and state to the subject (and list it in the machine's models), which nothing here uses, at a
        # cost larger than the transition's own.
        subject.timers = self.timers
        with self._lock:
            try:
                went = self.machine.events[trigger].trigger(subject)
            except MachineError as error:  # pragma: no cover - pre-checked above; kept as a safety net
                raise TriggerNotAllowed(
                    subject.object_id, trigger, subject.state, self.triggers_from(subject.state)
                ) from error
        if not went:  # no `when` chose a transition
            raise TriggerNotAllowed(subject.object_id, trigger, subject.state, self.triggers_from(subject.state),
                                    rule=specs[0].rule)
        if subject.armed and not all(t.name in self.timers for t in subject.armed):
            undeclared = sorted({t.name for t in subject.armed} - set(self.timers))
            raise DefinitionError(self.name, [f"{trigger}: its effect armed the undeclared timer(s) "
                                              f"{', '.join(undeclared)} (declare them in timers)"])

    def check(self) -> None:
        """Refuse an unsound definition: raise :class:`DefinitionError` naming it and every problem found."""
        found = self.problems()
        if found:
            raise DefinitionError(self.name, found)

    def problems(self) -> list[str]:
        """What makes the definition unsound (empty when it is sound), in a fixed order:

        - exactly one initial state: the implicit ``new`` (an object before it exists), never declared, final or
          entered, left by at least one transition that lands in a state;
        - the states and final states declared once, every transition's source and destination among them;
        - nothing leaves a final state (a transition there keeps the state: a refusal, an internal note);
        - every state is reachable from the initial one;
        - every timed trigger has a timer of its name, every timer a timed trigger that it fires;
        - every transition, guard and timer cites a section of the guideline (``SST-mpox-7.1 §5.5``);
        - a migration's state mapping covers every non-final state of the definition it migrates from, and maps
          only that definition's states to this one's (or to None: not migrated); a definition that migrates has
          an internal ``migrated`` transition that keeps the state, from every state the mapping gives;
          one that does not migrate has no ``migrated`` transition."""
        found: list[str] = []
        known = {NEW, *self.states}
        # One initial state.
        if NEW in self.states:
            found.append(f"state {NEW} is declared: it is the initial state, before an object exists, and is never "
                         "stored")
        if NEW in self.final:
            found.append(f"the initial state {NEW} is declared final")
        creating = [spec for spec in self.transitions if NEW in spec.source]
        if not creating:
            found.append(f"no transition leaves the initial state {NEW}: nothing creates an object")
        for spec in creating:
            if spec.dest is None or spec.dest == NEW:
                found.append(f"{spec.trigger}: leaves the initial state {NEW} without a destination state")
        for spec in self.transitions:
            if spec.dest == NEW and NEW not in spec.source:
                found.append(f"{spec.trigger}: enters the initial state {NEW}")
        # The states.
        seen: set[str] = set()
        for state in self.states:
            if state in seen:
                found.append(f"state {state} is declared twice")
            seen.add(state)
        found.extend(f"final state {s} is not a state" for s in sorted(self.final - set(self.states)))
        for spec in self.transitions:
            for source in spec.source:
                if source not in known:
                    found.append(f"{spec.trigger}: unknown source state {source}")
            if spec.dest is not None and spec.dest not in known:
                found.append(f"{spec.trigger}: unknown destination {spec.dest}")
        # Nothing leaves a final state.
        for spec in self.transitions:
            for source in spec.source:
                if source in self.final and spec.dest not in (None, source):
                    found.append(f"{spec.trigger}: leaves final state {source} (to {spec.dest})")
        # Every state reachable from the initial one.
        reached = {NEW}
        grew = True
        while grew:
            grew = False
            for spec in self.transitions:
                if spec.dest and spec.dest not in reached and reached.intersection(spec.source):
                    reached.add(spec.dest)
                    grew = True
        found.extend(f"state {s} is unreachable from {NEW}" for s in self.states if s not in reached and s != NEW)
        # Timers and timed triggers.
        timed = sorted({spec.trigger for spec in self.transitions if spec.timed})
        found.extend(f"timer {name} is declared twice" for name in self._declared_twice)
        found.extend(f"{name}: a timed trigger with no timer of its name (declare it in timers)"
                     for name in timed if name not in self.timers)
        found.extend(f"timer {name}: no timed transition of its name fires it" for name in self.timers
                     if name not in timed)
        # Every transition, guard and timer cites a section.
        for spec in self.transitions:
            if not cites_a_section(spec.rule):
                found.append(f"{spec.trigger}: cites no section ({spec.rule!r}; cite one as in "
                             "workflows.rules.cite: 'SST-mpox-7.1 §5.5')")
            for guard in spec.guards:
                if not cites_a_section(guard.rule):
                    found.append(f"{spec.trigger}: a guard cites no section ({guard.rule!r})")
        for timer in self.timers.values():
            if not cites_a_section(timer.rule):
                found.append(f"timer {timer.name}: cites no section ({timer.rule!r})")
        # A migration's state mapping, and the transition that migrates.
        migrating = [spec for spec in self.transitions if spec.trigger == MIGRATED]
        if self.migrates_from is None:
            if self.state_map:
                found.append("a state mapping without the definition it migrates from (migrates_from)")
            if migrating:
                found.append(f"{MIGRATED}: a migration transition without the definition it migrates from "
                             "(migrates_from)")
        else:
            origin = self.migrates_from
            if origin.kind != self.kind:
                found.append(f"migrates from {origin.name}, a workflow of another kind ({origin.kind})")
            found.extend(f"the state mapping from {origin.name} does not cover its non-final state {s}"
                         for s in origin.states if s not in origin.final and s not in self.state_map)
            for old, new in self.state_map.items():
                if old not in origin.states:
                    found.append(f"the state mapping from {origin.name} maps {old}, not one of its states")
                if new is not None and new not in self.states:
                    found.append(f"the state mapping from {origin.name} maps {old} to {new}, not one of this "
                                 "definition's states")
            if not migrating:
                found.append(f"no {MIGRATED} transition: declare the internal transition that migrates an object "
                             f"from {origin.name} (its guards and the timers it arms)")
            for spec in migrating:
                if spec.dest is not None or not spec.internal or spec.timed:
                    found.append(f"{MIGRATED}: must be internal and keep the state (dest None, internal=True)")
            covered = {s for spec in migrating for s in spec.source}
            found.extend(f"{MIGRATED}: does not leave {new}, a state the mapping from {origin.name} gives"
                         for new in sorted({n for n in self.state_map.values() if n in self.states} - covered))
        return found

    def mermaid(self) -> str:
        """The workflow as a Mermaid state diagram, drawn by `transitions` from this same table."""
        from transitions.extensions import GraphMachine

        class _Drawing:
            pass

        drawing = _Drawing()
        GraphMachine(
            model=drawing,
            states=[NEW, *self.states],
            transitions=[
                {"trigger": f"{s.trigger} ({section_of(s.rule)})", "source": list(s.source),
                 "dest": s.dest}
                for s in self.transitions
                if s.dest is not None
            ],
            initial=NEW,
            auto_transitions=False,
            graph_engine="mermaid",
            title=f"{self.name}",
        )
        graph = drawing.get_graph()  # type: ignore[attr-defined]
        return str(graph.draw(None))
