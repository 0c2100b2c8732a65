"""What the rules read about a person (never their reference): the facts that decide a vaccination plan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from workflows.errors import field as ref
from workflows.operations import Field, Operation
from workflows.profile import Profile

#: A case in one of these states is open (``workflows.case.OPEN_STATES``): a person has at most one open case
#: unless a clinician gives a reason for a second (``case open second_case_reason``).
OPEN_CASE_STATES = ("suspected", "confirmed", "isolated", "healed")


@dataclass(frozen=True)
class PersonFacts:
    born: date | None = None
    immunocompromised: bool = False
    #: Pregnant (§6.2.1).
    pregnant: bool = False
    #: Breastfeeding (§6.2.1 "gravide og ammende").
    breastfeeding: bool = False
    previous_mpox: bool = False
    smallpox_vaccinated: bool = False
    #: The states of the person's vaccination courses so far.
    courses: tuple[str, ...] = ()
    #: A case of the person has been confirmed by PCR (§6.3: not vaccinated after mpox).
    confirmed_mpox: bool = False
    #: Doses given outside mpoxflow (``person add/update doses_elsewhere last_dose_on``), §6.3.
    doses_elsewhere: int = 0
    last_dose_elsewhere_on: date | None = None
    #: Every dose recorded on any of the person's courses, whatever became of the course:
    #: ``(course internal id, date)``, oldest first (§6.3 counts doses over the person, not the course).
    course_doses: tuple[tuple[int, date], ...] = ()
    #: The person's open cases: ``(case id, state)``, oldest first.
    open_cases: tuple[tuple[str, str], ...] = ()

    @property
    def pregnant_or_breastfeeding(self) -> bool:
        return self.pregnant or self.breastfeeding

    def doses_besides(self, course_pk: int | None) -> tuple[int, date | None]:
        """How many doses the person has had outside the course ``course_pk`` (elsewhere and on every other
        course), and the date of the last of them (None when unknown or none)."""
        dates = [on for pk, on in self.course_doses if pk != course_pk]
        if self.last_dose_elsewhere_on is not None:
            dates.append(self.last_dose_elsewhere_on)
        return self.doses_elsewhere + sum(1 for pk, _ in self.course_doses if pk != course_pk), max(
            dates, default=None)


def age_on(born: date, day: date) -> int:
    """Whole years of age on ``day``."""
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


# ---- the operations on a person's facts (no workflow: the engine adds and updates persons directly) ------------

_DOSES_ELSEWHERE = ("Doses of mpox vaccine given outside mpoxflow (0-2; §6.3 no more than 2).",
                    "Doser givet andetsteds", "Doses given elsewhere")
_LAST_DOSE_ON = (f"With {ref('doses_elsewhere')}: the date of the last of them, YYYY-MM-DD.",
                 "Dato for seneste dosis givet andetsteds", "Last dose elsewhere on")


def _update(name: str, help: str, da: str, en: str) -> Field:
    """A fact ``person update`` sets, unsets, or (not given) leaves as it is."""
    return Field(name, "flag", f"{help} (or no longer).", da, en)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "person add", "person", None, "register a person", "Register a person.",
        fields=(
            Field("ref", "text", "External reference (e.g. CPR); shown to staff, never logged.", "Reference (CPR)",
                  "Reference (CPR)", required=True),
            Field("born", "date", "Birth date, YYYY-MM-DD.", "Fødselsdato", "Born"),
            Field("immunocompromised", "flag", "", "Immunsupprimeret", "Immunocompromised", default=False),
            Field("pregnant", "flag", "Pregnant (§6.2.1: PEP only).", "Gravid", "Pregnant", default=False),
            Field("breastfeeding", "flag", "Breastfeeding (§6.2.1: PEP only).", "Ammende", "Breastfeeding",
                  default=False),
            Field("previous_mpox", "flag", "", "Har haft mpox", "Has had mpox", default=False),
            Field("smallpox_vaccinated", "flag", "", "Koppevaccineret", "Smallpox-vaccinated", default=False),
            Field("doses_elsewhere", "count", *_DOSES_ELSEWHERE, default=0, bounds=(0, 2)),
            Field("last_dose_on", "date", *_LAST_DOSE_ON),
        ),
        creates=True,
    ),
    Operation(
        "person update", "person", None, "change a person's facts (pregnancy, breastfeeding, doses elsewhere, ...)",
        "Change what the rules read about a person: pregnancy and breastfeeding come and go (§6.2.1), doses given "
        "elsewhere count towards the two a person may have (§6.3). Only the options given change.",
        fields=(
            Field("born", "date", "A corrected birth date, YYYY-MM-DD.", "Fødselsdato", "Born"),
            _update("pregnant", "Pregnant (§6.2.1)", "Gravid", "Pregnant"),
            _update("breastfeeding", "Breastfeeding (§6.2.1)", "Ammende", "Breastfeeding"),
            _update("immunocompromised", "Immunocompromised (§6.4)", "Immunsupprimeret", "Immunocompromised"),
            _update("previous_mpox", "Has had mpox (§6.3)", "Har haft mpox", "Has had mpox"),
            _update("smallpox_vaccinated", "Smallpox-vaccinated (§6.4)", "Koppevaccineret", "Smallpox-vaccinated"),
            Field("doses_elsewhere", "count", *_DOSES_ELSEWHERE, bounds=(0, 2)),
            Field("last_dose_on", "date", *_LAST_DOSE_ON, shown_as="last_dose_elsewhere_on"),
        ),
        id_help="The person's id (person-N).",
    ),
    Operation(
        "person correct", "person", None, "correct a wrong birth date, pregnancy or immunodeficiency",
        f"Correct a recorded fact that was wrong, with {ref('reason')} (required): the birth date, pregnancy "
        "(§6.2.1), immunodeficiency (§6.4). What the person's open cases and courses derive from them is "
        "recomputed (a child case §3.2, antiviral advice §3.4, the dose plan §6.4); a course under way is never "
        "shortened by it (refused: the clinician decides). The audit entry keeps the previous flags, and that the "
        "birth date changed (never its value).",
        fields=(
            Field("born", "date", "The corrected birth date, YYYY-MM-DD.", "Korrigeret fødselsdato",
                  "Corrected birth date"),
            _update("pregnant", "Pregnant (§6.2.1)", "Gravid", "Pregnant"),
            _update("immunocompromised", "Immunocompromised (§6.4)", "Immunsupprimeret", "Immunocompromised"),
        ),
        id_help="The person's id (person-N).",
        reason_help="Why the recorded value was wrong (required): goes into the audit entry.",
        reason_required=True,
    ),
)


#: How persons show: the people cases, contacts and courses are about (they have no workflow of their own).
PROFILE = Profile("person", "person", "Persons: the people cases, contacts and courses are about.", "persons",
                  "Persons", ("id", "ref", "born"))
