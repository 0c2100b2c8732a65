"""What the rules read about a person (never their reference): the facts that decide a vaccination plan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

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
