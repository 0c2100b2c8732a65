"""What the rules read about a person (never their reference): the facts that decide a vaccination plan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class PersonFacts:
    born: date | None = None
    immunocompromised: bool = False
    #: Pregnant or breastfeeding (§6.2.1).
    pregnant: bool = False
    previous_mpox: bool = False
    smallpox_vaccinated: bool = False
    #: The states of the person's vaccination courses so far.
    courses: tuple[str, ...] = ()
    #: A case of the person has been confirmed by PCR (§6.3: not vaccinated after mpox).
    confirmed_mpox: bool = False


def age_on(born: date, day: date) -> int:
    """Whole years of age on ``day``."""
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))
