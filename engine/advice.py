"""Advice sheets (issue 21 item 3): what the guideline says a person must do, as a sheet made for them.

One sheet per situation the guideline gives advice for, each made from the object's own view (``object_view``:
its facts and timers) and its definition (the periods it declares), every paragraph citing its section:

- ``suspected``: a suspected case (§2.2.1: self-isolation until a negative test; §2.3 transport; §4.1, which
  holds for suspected cases too: no sexual contact, the work restriction, the mask);
- ``confirmed``: a confirmed case while infectious and in the weeks after healing (§4.1, §4.1.1, §4.1.2: contact,
  sexual contact, the work restriction, isolation by the case's own mode, cleaning, and the condom advice with its
  last day from the case's ``condom_advice_ends`` timer once healed);
- ``contact``: a close contact under monitoring (§5.5: the symptoms to watch, the days counted from the last
  exposure with the last day printed, from its pending ``monitoring_ends`` timer, whom to call; PEP's dates from
  its PEP timers, §5.3, §6.2);
- ``pep``: a PEP course offered, before consent (§6, §6.2 with §6.2.1-2: the off-label information; the window's
  days; §6.3, §6.4).

Which sheets an object has (``sheets_for``) follows from its kind and state alone. A sheet names its reader only
by what they need: no reference, no birth date, no name, and nothing of another person (a contact's sheet never
names its case). Its words are the guideline's, in Danish and English, held here (``Text``) so that every entry
point renders the same sheet: the pages' HTML and the PDF (``entry.web.advice``), the command line's text
(``plain_text``), later an e-mail's. Dates are Danish calendar days; a window closing at 00:00 local on D+1 has
D as its last day (printed "til og med D").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from persistence.repository import parse_id
from workflows.calendar import local_date
from workflows.errors import RuleRefused, UsageError, because
from workflows.limits import shown
from workflows.registry import BY_NAME

#: The sheets, in the order a page lists them.
SHEETS = ("suspected", "confirmed", "contact", "pep")
LANGUAGES = ("da", "en")
#: The kinds that have sheets.
KINDS = ("case", "contact", "course")
#: A case's states with the confirmed sheet: infectious (confirmed, isolated) and healed (the condom advice runs).
CONFIRMED_STATES = ("confirmed", "isolated", "healed")
#: A contact's states with the contact sheet: under monitoring.
CONTACT_STATES = ("exposed", "monitored")

_DA_MONTHS = ("januar", "februar", "marts", "april", "maj", "juni", "juli", "august", "september", "oktober",
              "november", "december")
_DA_DAYS = ("mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag")
_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December")
_EN_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def day_text(day: date, language: str) -> str:
    """A date as a letter writes it: ``søndag den 30. marts 2025``, ``Sunday 30 March 2025``."""
    if language == "en":
        return f"{_EN_DAYS[day.weekday()]} {day.day} {_EN_MONTHS[day.month - 1]} {day.year}"
    return f"{_DA_DAYS[day.weekday()]} den {day.day}. {_DA_MONTHS[day.month - 1]} {day.year}"


@dataclass(frozen=True)
class Text:
    """One text of a sheet in Danish (the guideline's language, the default) and English, with ``{name}`` fields."""

    da: str
    en: str

    def say(self, language: str, **values: Any) -> str:
        template = self.en if language == "en" else self.da
        return template.format(**{k: day_text(v, language) if isinstance(v, date) else v for k, v in values.items()})


@dataclass(frozen=True)
class Paragraph:
    text: str
    #: The sections it rests on, cited as the object's definition cites them (``SST-mpox-7.1 §5.5``).
    cites: tuple[str, ...]


@dataclass(frozen=True)
class Part:
    heading: str
    paragraphs: tuple[Paragraph, ...]


@dataclass(frozen=True)
class KeyDate:
    """A date the sheet is about (``last_day``), its label and its text in the sheet's language."""

    key: str
    label: str
    day: date
    text: str


@dataclass(frozen=True)
class Sheet:
    """A sheet as structured content: what HTML, PDF and plain text are rendered from."""

    name: str
    object: str
    language: str
    title: str
    lead: str
    parts: tuple[Part, ...]
    dates: tuple[KeyDate, ...]
    #: The guideline (``SST-mpox-7.1``) and the definition (``contact@SST-mpox-7.1``) it was made under.
    guideline: str
    workflow: str
    made_on: date
    labels: Mapping[str, str] = field(default_factory=dict)

    def date(self, key: str) -> date | None:
        return next((d.day for d in self.dates if d.key == key), None)

    @property
    def citations(self) -> list[str]:
        """Every section the sheet cites, once, in order of first citation."""
        seen: dict[str, None] = {}
        for part in self.parts:
            for paragraph in part.paragraphs:
                seen.update(dict.fromkeys(paragraph.cites))
        return list(seen)

    def as_dict(self) -> dict[str, Any]:
        """The sheet as JSON (``mpoxflow advice --json``)."""
        return {
            "sheet": self.name, "object": self.object, "language": self.language, "title": self.title,
            "lead": self.lead, "guideline": self.guideline, "workflow": self.workflow,
            "made_on": self.made_on.isoformat(),
            "dates": [{"key": d.key, "label": d.label, "on": d.day.isoformat(), "text": d.text} for d in self.dates],
            "parts": [{"heading": p.heading, "paragraphs": [{"text": q.text, "cites": list(q.cites)}
                                                            for q in p.paragraphs]} for p in self.parts],
            "citations": self.citations,
        }


#: The words around a sheet's content (its key dates' box, its sources, its footer).
LABELS = {
    "dates": Text("Vigtige datoer", "Key dates"),
    "sources": Text("Kilde", "Source"),
    "guideline": Text("Sundhedsstyrelsen: Retningslinjer for håndtering af mpox, version 7.1 (18. februar 2025)",
                      "Danish Health Authority: Guidelines for the management of mpox, version 7.1 "
                      "(18 February 2025)"),
    "made": Text("Udskrevet {made} ({object})", "Printed {made} ({object})"),
}


# ---- which sheets -----------------------------------------------------------------------------------------------


def sheets_for(view: Mapping[str, Any]) -> list[str]:
    """The sheets an object has, from its kind and state (Decision): a suspected case the ``suspected`` sheet; a
    confirmed, isolated or healed case the ``confirmed`` one (healed: its condom advice still runs); an exposed or
    monitored contact the ``contact`` one; a PEP course while offered (before dose 1, when consent is asked) the
    ``pep`` one. Everything else none: a released contact's monitoring is over, a symptomatic one is a suspected
    case (its case has the sheet), a closed case's advice has ended."""
    kind, state = view.get("kind"), view.get("state")
    if kind == "case":
        if state == "suspected":
            return ["suspected"]
        if state in CONFIRMED_STATES:
            return ["confirmed"]
    elif kind == "contact":
        if state in CONTACT_STATES and _pending(view, "monitoring_ends") is not None:
            return ["contact"]
    elif kind == "course" and view.get("indication") == "pep" and state == "offered":
        return ["pep"]
    return []


def check_language(language: str | None) -> str:
    if language is None:
        return "da"
    if language not in LANGUAGES:
        raise UsageError(because("⟦lang⟧ '%(lang)s' is not a language of the sheets: use da or en",
                                 lang=shown(str(language))))
    return language


def choose(view: Mapping[str, Any], name: str | None) -> str:
    """The sheet ``name`` of the object (None: its only one). UsageError for a kind without sheets or a name that
    is no sheet; RuleRefused for an object whose state has no sheet (naming the section that decides)."""
    object_id = str(view.get("id"))
    if view.get("kind") not in KINDS:
        raise UsageError(because("advice sheets are for cases, contacts and courses, not %(object)s: give the id of "
                                 "a case, a contact or a course", object=object_id))
    if name is not None and name not in SHEETS:
        raise UsageError(because("⟦sheet⟧ '%(sheet)s' is not an advice sheet: use one of %(sheets)s",
                                 sheet=shown(str(name)), sheets=list(SHEETS)))
    available = sheets_for(view)
    if not available:
        raise RuleRefused(because("%(object)s (%(state)s) has no advice sheet: the guideline advises a suspected "
                                  "case, a confirmed case until its condom advice ends, a contact under monitoring "
                                  "and a person offered PEP", object=object_id, state=str(view.get("state"))),
                          rule=_rule(view, _SECTION_OF_KIND[str(view["kind"])]), key="no_advice_sheet")
    if name is None:
        return available[0]
    if name not in available:
        raise RuleRefused(because("%(object)s (%(state)s) has no %(sheet)s sheet: its sheet is %(available)s",
                                  object=object_id, state=str(view.get("state")), sheet=name,
                                  available=available), rule=_rule(view, _SECTION_OF_SHEET[name]),
                          key="not_its_advice_sheet")
    return name


_SECTION_OF_SHEET = {"suspected": "§2.2.1", "confirmed": "§4.1", "contact": "§5.5", "pep": "§6.2"}
_SECTION_OF_KIND = {"case": "§4.1", "contact": "§5.5", "course": "§6.2"}
#: The section each sheet gives the advice of (what handing it to the person is recorded under).
SECTION_OF_SHEET = {"suspected": "§2.2", "confirmed": "§4.1", "contact": "§5.5", "pep": "§6.2"}


def sheet_rule(guideline: str, sheet: str) -> str:
    """The citation of a sheet's section in ``guideline``'s terms: ``SST-mpox-7.1 §5.5``."""
    return f"{guideline} {SECTION_OF_SHEET[sheet]}"


# ---- the engine's side -------------------------------------------------------------------------------------------


class Reader(Protocol):
    """What a sheet is read through: the engine's ``show`` (which respects the viewer's units) and its clock."""

    def show(self, object_id: str) -> dict[str, Any]: ...

    @property
    def clock(self) -> Any: ...


def _kind_with_sheets(object_id: str) -> None:
    """UsageError before anything is read for an id of a kind without sheets (a person's view would be a read of
    personal data); NotFound for no id at all."""
    kind, _ = parse_id(object_id)
    if kind not in KINDS:
        raise UsageError(because("advice sheets are for cases, contacts and courses, not %(object)s: give the id of "
                                 "a case, a contact or a course", object=shown(object_id)))


def available(engine: Reader, object_id: str) -> list[str]:
    """The sheets of ``object_id`` (``sheets_for`` of its view): NotFound, OutsideUnits as ``show``."""
    _kind_with_sheets(object_id)
    return sheets_for(engine.show(object_id))


def make(engine: Reader, object_id: str, name: str | None = None, language: str | None = "da") -> Sheet:
    """The sheet ``name`` (None: the object's only one) of ``object_id`` in ``language`` (da, en), from the
    object's view as the reader may see it (``show``: NotFound, OutsideUnits) and its definition. Reads no
    person: a sheet shows no personal data."""
    language = check_language(language)
    if name is not None and name not in SHEETS:
        choose({"id": object_id, "kind": "case"}, name)  # the name's UsageError, before anything is read
    _kind_with_sheets(object_id)
    view = engine.show(object_id)
    chosen = choose(view, name)
    today = local_date(engine.clock.now())
    return build(view, chosen, language, today)


def build(view: Mapping[str, Any], name: str, language: str, today: date) -> Sheet:
    """The sheet ``name`` of an object's view, pure: its words in ``language``, its dates from the view's facts
    and timers and the periods its definition declares."""
    return _BUILDERS[name](_Maker(view, name, language, today))


# ---- making a sheet ----------------------------------------------------------------------------------------------


def _rule(view: Mapping[str, Any], section: str) -> str:
    definition = BY_NAME.get(str(view.get("workflow")))
    return f"{definition.version if definition is not None else 'SST-mpox-7.1'} {section}"


def _pending(view: Mapping[str, Any], name: str) -> datetime | None:
    """The due instant of the object's pending timer ``name``, or None."""
    for timer in view.get("timers") or ():
        if timer.get("name") == name and timer.get("status") == "pending" and timer.get("due_at"):
            return datetime.fromisoformat(str(timer["due_at"]))
    return None


def last_day_of(due_at: datetime) -> date:
    """The last day a window covers: the day before the Danish day it closes on (at 00:00 local)."""
    return local_date(due_at) - timedelta(days=1)


def _on(view: Mapping[str, Any], key: str) -> date | None:
    value = view.get(key)
    return date.fromisoformat(str(value)) if value else None


class _Maker:
    """Collects one sheet's parts and dates in its language."""

    def __init__(self, view: Mapping[str, Any], name: str, language: str, today: date) -> None:
        self.view, self.name, self.language, self.today = view, name, language, today
        self.definition = BY_NAME[str(view["workflow"])]
        self.parts: list[Part] = []
        self.dates: list[KeyDate] = []
        self._paragraphs: list[Paragraph] = []
        self._heading = ""

    def days(self, timer: str, default: int) -> int:
        """The period (whole days) the object's definition declares for ``timer``."""
        declared = self.definition.timers.get(timer)
        return declared.period.days if declared is not None and declared.period is not None else default

    def cite(self, *sections: str) -> tuple[str, ...]:
        return tuple(f"{self.definition.version} {s}" for s in sections)

    def part(self, heading: Text) -> None:
        self._close()
        self._heading = heading.say(self.language)

    def say(self, text: Text, *sections: str, **values: Any) -> None:
        self._paragraphs.append(Paragraph(text.say(self.language, **values), self.cite(*sections)))

    def date(self, key: str, label: Text, day: date | None) -> None:
        if day is not None:
            self.dates.append(KeyDate(key, label.say(self.language), day, day_text(day, self.language)))

    def _close(self) -> None:
        if self._paragraphs:
            self.parts.append(Part(self._heading, tuple(self._paragraphs)))
        self._paragraphs = []

    def sheet(self, title: Text, lead: Text, **values: Any) -> Sheet:
        self._close()
        labels = {k: t.say(self.language, made=self.today, object=self.view["id"]) for k, t in LABELS.items()}
        return Sheet(name=self.name, object=str(self.view["id"]), language=self.language,
                     title=title.say(self.language), lead=lead.say(self.language, **values), parts=tuple(self.parts),
                     dates=tuple(self.dates), guideline=self.definition.version, workflow=self.definition.name,
                     made_on=self.today, labels=labels)


# ---- the words (Danish as the guideline says it; English beside it) ------------------------------------------------

NO_SEX = Text("Det gælder også alle former for seksuel kontakt, uanset om der bruges kondom eller slikkelap.",
              "This includes every kind of sexual contact, whether or not a condom or dental dam is used.")
HEALED_WHEN = Text("alle blærer er helet fuldstændig op, sårskorperne er faldet af, og du ikke længere har "
                   "almensymptomer (fx feber)",
                   "every blister has fully healed, the scabs have fallen off and you no longer have general "
                   "symptoms (such as fever)")
WORK_IF = Text("Har du et arbejde med tæt fysisk kontakt til andre, eller arbejder du med børn under 12 år, gravide "
               "eller personer med nedsat immunforsvar, bør du ikke gå på arbejde, før {healed}.",
               "If your work involves close physical contact with others, or you work with children under 12, "
               "pregnant women or people with a weakened immune system, do not go to work until {healed}.")
WORK_YOU = Text("Dit arbejde indebærer tæt fysisk kontakt til andre eller arbejde med børn under 12 år, gravide eller "
                "personer med nedsat immunforsvar: gå ikke på arbejde, før {healed}.",
                "Your work involves close physical contact with others, or children under 12, pregnant women or "
                "people with a weakened immune system: do not go to work until {healed}.")
MASK = Text("Bær kirurgisk maske type II, når du møder op i sundhedsvæsenet, så længe du har symptomer.",
            "Wear a type II surgical mask whenever you attend a healthcare service, for as long as you have "
            "symptoms.")


def _work(m: _Maker, *sections: str, suspected: bool = False) -> None:
    healed = HEALED_WHEN.say(m.language)
    if suspected:
        healed += Text(" – eller indtil du har fået et negativt prøvesvar",
                       " – or until you have had a negative test result").say(m.language)
    m.say(WORK_YOU if m.view.get("no_work") else WORK_IF, *sections, healed=healed)


def _suspected(m: _Maker) -> Sheet:
    m.date("onset", Text("Dine symptomer begyndte", "Your symptoms began"), _on(m.view, "onset"))
    m.part(Text("Indtil du har fået dit prøvesvar", "Until you have your test result"))
    m.say(Text("Isolér dig, og undgå tæt fysisk kontakt med andre mennesker, både i og uden for din husstand.",
               "Isolate yourself and avoid close physical contact with other people, both inside and outside your "
               "household."), "§2.2.1", "§4.1")
    m.say(NO_SEX, "§4.1")
    _work(m, "§4.1", "§2.2.1", suspected=True)
    m.say(MASK, "§4.1")
    m.say(Text("Tag så vidt muligt selv til lægeundersøgelse. Bruger du offentlig transport, så hold så vidt muligt "
               "afstand til andre, bær kirurgisk maske type II, og tildæk udslættet.",
               "If you can, get yourself to the doctor's examination. On public transport, keep your distance from "
               "others as far as you can, wear a type II surgical mask and cover the rash."), "§2.3")
    m.part(Text("Når du får dit prøvesvar", "When you get your result"))
    m.say(Text("Er prøvesvaret negativt, kan du ophøre med selvisolationen.",
               "If the result is negative, you can end your self-isolation."), "§2.2.1")
    m.say(Text("Er prøvesvaret positivt, har du mpox: så gælder rådene til personer med påvist mpox, som du får "
               "udleveret.",
               "If the result is positive, you have mpox: the advice for people with confirmed mpox then applies, "
               "which you will be given."), "§4.1")
    return m.sheet(Text("Råd til dig, der er mistænkt for at have mpox", "Advice for you if you may have mpox"),
                   Text("Du er blevet undersøgt for mpox, og dit prøvesvar er ikke klar endnu. Indtil da gælder disse "
                        "råd fra Sundhedsstyrelsens retningslinjer.",
                        "You have been tested for mpox and your result is not ready yet. Until then, this is the "
                        "advice of the Danish Health Authority's guidelines."))


def _weeks(days: int, language: str) -> str:
    if days % 7 == 0:
        return f"{days // 7} {'weeks' if language == 'en' else 'uger'}"
    return f"{days} {'days' if language == 'en' else 'dage'}"


def _confirmed(m: _Maker) -> Sheet:
    healed_on = _on(m.view, "healed_on")
    condom_days = m.days("condom_advice_ends", 84)
    ends = _pending(m.view, "condom_advice_ends")
    condom_last = last_day_of(ends) if ends is not None else None
    m.date("healed_on", Text("Dit udslæt blev helet op", "Your rash healed"), healed_on)
    m.date("condom_last_day", Text("Brug kondom til og med", "Use a condom up to and including"), condom_last)
    if m.view.get("state") != "healed":
        m.part(Text("Mens du er smitsom", "While you are infectious"))
        m.say(Text("Du er smitsom, indtil {healed}. Indtil da skal du undgå tæt fysisk kontakt med andre mennesker, "
                   "både i og uden for din husstand.",
                   "You are infectious until {healed}. Until then, avoid close physical contact with other people, "
                   "both inside and outside your household."), "§4.1", healed=HEALED_WHEN.say(m.language))
        m.say(Text("Det gælder også alle former for seksuel kontakt, uanset om der bruges kondom eller slikkelap, og "
                   "også selv om du er vaccineret mod mpox.",
                   "This includes every kind of sexual contact, whether or not a condom or dental dam is used, and "
                   "also if you have been vaccinated against mpox."), "§4.1")
        m.say(Text("Undgå kontakt med personer, der er i risiko for at blive alvorligt syge af mpox, hvis de bliver "
                   "smittet.",
                   "Avoid contact with people who are at risk of severe mpox disease if they are infected."),
              "§4.1")
        _work(m, "§4.1")
        m.say(MASK, "§4.1")
        mode = m.view.get("isolation_mode")
        if mode == "home":
            m.say(Text("Du anbefales selvisolation i eget hjem: begræns al aktivitet uden for hjemmet, og tag ikke på "
                       "arbejde, i skole og lignende. Må du bryde isolationen, fx for at gå til lægen, så tildæk "
                       "udslæt og blærer så vidt muligt med fx langærmet trøje og lange bukser, og bær kirurgisk "
                       "maske type II. Kollektiv transport kan bruges, hvis andet ikke er muligt.",
                       "You are advised to self-isolate at home: limit all activity outside your home and do not go "
                       "to work, school or the like. If you must break the isolation, for example to see a doctor, "
                       "cover the rash and blisters as far as you can, for example with long sleeves and trousers, "
                       "and wear a type II surgical mask. Public transport may be used if there is no other way."),
                  "§4.1", "§4.1.1")
        elif mode == "covered":
            m.say(Text("Du kan færdes frit, så længe dit udslæt og dine blærer kan tildækkes fuldstændigt med tøj, og "
                       "du ikke har almensymptomer. Vær særligt omhyggelig med håndhygiejnen, og undgå situationer "
                       "med tæt fysisk kontakt til andre, også offentlige forsamlinger og begivenheder som koncerter "
                       "og festivaler.",
                       "You may move about freely as long as your rash and blisters can be fully covered by clothing "
                       "and you have no general symptoms. Take particular care with hand hygiene and avoid situations "
                       "of close physical contact with others, including public gatherings and events such as "
                       "concerts and festivals."), "§4.1")
            m.say(Text("Se jævnligt efter, om der er kommet nye blærer. Kommer der nye blærer, som ikke kan tildækkes "
                       "af tøj, eller får du almensymptomer som feber, symptomer fra luftvejene eller andre "
                       "influenzalignende symptomer, skal du gå i selvisolation i eget hjem.",
                       "Check regularly for new blisters. If new blisters appear that clothing cannot cover, or you "
                       "get general symptoms such as fever, respiratory or other flu-like symptoms, self-isolate at "
                       "home."), "§4.1")
        else:
            m.say(Text("Har du almensymptomer som feber, symptomer fra luftvejene eller andre influenzalignende "
                       "symptomer, eller sidder udslættet, hvor det ikke kan tildækkes (fx i ansigtet, på hænderne "
                       "eller i munden), anbefales selvisolation i eget hjem. Kan udslættet tildækkes fuldstændigt "
                       "med tøj, og har du ingen almensymptomer, kan du færdes frit, men undgå tæt fysisk kontakt "
                       "med andre, også ved forsamlinger som koncerter og festivaler. I tvivlstilfælde vurderer den "
                       "læge, der behandler dig.",
                       "If you have general symptoms such as fever, respiratory or other flu-like symptoms, or the "
                       "rash is where it cannot be covered (for example on the face, the hands or in the mouth), you "
                       "are advised to self-isolate at home. If the rash can be fully covered by clothing and you "
                       "have no general symptoms, you may move about freely, but avoid close physical contact with "
                       "others, including at gatherings such as concerts and festivals. When in doubt, the doctor "
                       "treating you decides."), "§4.1")
        m.say(Text("Bliver din tilstand værre, så kontakt den læge eller afdeling, der behandler dig.",
                   "If you get worse, contact the doctor or department treating you."), "§4.1")
        m.say(Text("Virus kan overleve i uger til måneder på overflader og i sengetøj, håndklæder og lignende. Når "
                   "isolationen i eget hjem er slut, så gør grundigt rent, og vask tøj, sengetøj og håndklæder ved "
                   "mindst 60 °C, om muligt selv.",
                   "The virus can survive for weeks to months on surfaces and in bedding, towels and the like. When "
                   "isolation at home is over, clean thoroughly and wash clothes, bedding and towels at 60 °C or "
                   "more, yourself if possible."), "§4.1.2")
        m.say(Text("Har du kæledyr eller husdyr, kan Styrelsen for Patientsikkerhed rådføre sig med Fødevarestyrelsen "
                   "om eventuelle forholdsregler.",
                   "If you have pets or livestock, the Danish Patient Safety Authority may consult the Danish "
                   "Veterinary and Food Administration about any precautions."), "§4.1")
    m.part(Text("Efter at du er blevet rask", "After you have recovered"))
    weeks = _weeks(condom_days, m.language)
    if healed_on is not None and condom_last is not None:
        m.say(Text("Dit udslæt blev registreret som helet op {healed_on}. Brug kondom i {weeks} efter overstået "
                   "infektion, dvs. til og med {last}.",
                   "Your rash was recorded as healed on {healed_on}. Use a condom for {weeks} after the infection, "
                   "that is up to and including {last}."), "§4.1", healed_on=healed_on, weeks=weeks,
              last=condom_last)
    else:
        m.say(Text("Når udslættet er helet op, anbefales du at bruge kondom i {weeks} efter overstået infektion.",
                   "Once the rash has healed, you are advised to use a condom for {weeks} after the infection."),
              "§4.1", weeks=weeks)
    return m.sheet(Text("Råd til dig, der har mpox", "Advice for you who have mpox"),
                   Text("Du har fået påvist mpox. Disse råd fra Sundhedsstyrelsens retningslinjer gælder, mens du er "
                        "smitsom, og i tiden efter, at du er blevet rask.",
                        "You have been diagnosed with mpox. This advice of the Danish Health Authority's guidelines "
                        "applies while you are infectious and for a time after you have recovered."))


def _contact(m: _Maker) -> Sheet:
    last_exposure = _on(m.view, "last_exposure_on")
    ends = _pending(m.view, "monitoring_ends")
    if last_exposure is None or ends is None:  # sheets_for offers none then
        raise RuleRefused(because("%(object)s has no monitoring running: it has no contact sheet",
                                  object=str(m.view["id"])), rule=m.cite("§5.5")[0], key="no_advice_sheet")
    last = last_day_of(ends)
    days = (last - last_exposure).days
    best, latest = _pending(m.view, "pep_optimal_window_closes"), _pending(m.view, "pep_window_closes")
    m.date("last_exposure", Text("Din sidste udsættelse for smitte", "Your last exposure"), last_exposure)
    m.date("last_day", Text("Vær opmærksom på symptomer til og med", "Watch for symptoms up to and including"), last)
    m.date("pep_best_by", Text("Vaccination (PEP) bedst senest", "Vaccination (PEP) best by"),
           last_day_of(best) if best else None)
    m.date("pep_latest_by", Text("Vaccination (PEP) i særlige tilfælde senest",
                                 "Vaccination (PEP) in special cases by"), last_day_of(latest) if latest else None)
    m.part(Text("Hvad du skal gøre", "What you should do"))
    m.say(Text("Vær opmærksom på symptomer på mpox i {days} dage efter din sidste udsættelse for smitte, dvs. til og "
               "med {last}.",
               "Watch for symptoms of mpox for {days} days after your last exposure, that is up to and including "
               "{last}."), "§5.5", days=days, last=last)
    m.say(Text("Mpox begynder typisk med almensymptomer som feber, kulderystelser, hovedpine, muskel- eller "
               "rygsmerter, træthed og hævede lymfeknuder. Inden for få dage kommer udslæt på hud eller slimhinder, "
               "som bliver til små blærer og siden til sårskorper. Udslættet kan være begrænset til kønsdele og "
               "balder, og smerter eller blødning fra endetarmen kan være det eneste symptom.",
               "Mpox typically begins with general symptoms such as fever, chills, headache, muscle or back pain, "
               "fatigue and swollen lymph nodes. Within a few days a rash appears on the skin or mucous membranes, "
               "turning into small blisters and later scabs. The rash may be limited to the genitals and buttocks, "
               "and pain or bleeding from the rectum may be the only symptom."), "§5.5", "§1.4.1")
    m.say(Text("Undgå tæt fysisk kontakt med andre til og med {last}, især med personer med nedsat immunforsvar, "
               "gravide og børn under 12 år.",
               "Avoid close physical contact with others up to and including {last}, especially with people with a "
               "weakened immune system, pregnant women and children under 12."), "§5.5", last=last)
    m.say(Text("Vær opmærksom på god hygiejne, herunder håndhygiejne, rengøring og hosteetikette.",
               "Take care with hygiene, including hand hygiene, cleaning and coughing and sneezing into your "
               "sleeve."), "§5.5")
    m.say(Text("Du skal ikke isolere dig, så længe du ikke har symptomer: der er ikke dokumenteret smitte før "
               "symptomerne begynder.",
               "You do not need to isolate as long as you have no symptoms: no transmission before symptoms begin "
               "has been documented."), "§5.5")
    m.part(Text("Hvis du får symptomer", "If you get symptoms"))
    if m.view.get("anonymous_via_doctor"):
        m.say(Text("Isolér dig med det samme, og kontakt den infektionsmedicinske afdeling, som lægen, der kontaktede "
                   "dig, har henvist dig til. Fortæl, at du har været udsat for smitte med mpox og har fået "
                   "symptomer. Afdelingen sørger for undersøgelse og prøvetagning.",
                   "Isolate yourself at once and contact the infectious diseases department that the doctor who "
                   "contacted you referred you to. Say that you have been exposed to mpox and have developed "
                   "symptoms. The department arranges examination and testing."), "§5.5", "§5.4")
    else:
        m.say(Text("Isolér dig med det samme, og kontakt den infektionsmedicinske afdeling, som Styrelsen for "
                   "Patientsikkerhed har henvist dig til. Fortæl, at du har været udsat for smitte med mpox og har "
                   "fået symptomer. Afdelingen sørger for undersøgelse og prøvetagning.",
                   "Isolate yourself at once and contact the infectious diseases department that the Danish Patient "
                   "Safety Authority referred you to. Say that you have been exposed to mpox and have developed "
                   "symptoms. The department arranges examination and testing."), "§5.5", "§2.1")
    if best is not None or latest is not None:
        m.part(Text("Vaccination", "Vaccination"))
        if best is not None and latest is not None:
            m.say(Text("Du kan blive tilbudt vaccination efter udsættelse for smitte (PEP) efter en lægelig vurdering. "
                       "Den første dosis gives bedst senest {best} og i særlige tilfælde senest {latest}.",
                       "You may be offered vaccination after exposure (PEP) after a medical assessment. The first "
                       "dose is best given by {best}, and in special cases by {latest}."), "§5.3", "§6.2",
                  best=last_day_of(best), latest=last_day_of(latest))
        elif latest is not None:
            m.say(Text("Du kan blive tilbudt vaccination efter udsættelse for smitte (PEP) efter en lægelig vurdering. "
                       "Den første dosis kan i særlige tilfælde gives senest {latest}.",
                       "You may be offered vaccination after exposure (PEP) after a medical assessment. In special "
                       "cases the first dose can be given by {latest}."), "§5.3", "§6.2",
                  latest=last_day_of(latest))
    return m.sheet(Text("Råd til dig, der er nær kontakt til en person med mpox",
                        "Advice for you as a close contact of a person with mpox"),
                   Text("Du har været i nær kontakt med en person med påvist mpox, senest {last_exposure}. Det betyder "
                        "ikke, at du er smittet, men disse råd fra Sundhedsstyrelsens retningslinjer gælder til og "
                        "med {last}.",
                        "You have been in close contact with a person with confirmed mpox, most recently on "
                        "{last_exposure}. This does not mean that you are infected, but this advice of the Danish "
                        "Health Authority's guidelines applies up to and including {last}."),
                   last_exposure=last_exposure, last=last)


def _pep(m: _Maker) -> Sheet:
    from workflows.contact import CONTACT

    exposure = _on(m.view, "exposure_on")
    latest_days = m.days("pep_window_closes", 14)
    optimal = CONTACT.timers["pep_optimal_window_closes"].period  # §6.2 best within 4 days: the contact's rule
    optimal_days = optimal.days if optimal is not None else 4
    ends = _pending(m.view, "pep_window_closes")
    latest = last_day_of(ends) if ends is not None else (
        exposure + timedelta(days=latest_days) if exposure is not None else None)
    best = exposure + timedelta(days=optimal_days) if exposure is not None else None
    m.date("exposure_on", Text("Udsættelsen for smitte", "The exposure"), exposure)
    m.date("pep_best_by", Text("Første dosis bedst senest", "First dose best by"), best)
    m.date("pep_latest_by", Text("Første dosis i særlige tilfælde senest", "First dose in special cases by"), latest)
    m.part(Text("Om tilbuddet", "About the offer"))
    m.say(Text("Vaccination som forebyggelse efter udsættelse for smitte (post-exposure profylakse, PEP) tilbydes "
               "nære kontakter til personer med påvist mpox efter vurdering ved en læge eller Styrelsen for "
               "Patientsikkerhed. Vurderingen bygger både på risikoen for smitte og på risikoen for at blive "
               "alvorligt syg.",
               "Vaccination after exposure (post-exposure prophylaxis, PEP) is offered to close contacts of people "
               "with confirmed mpox after an assessment by a doctor or the Danish Patient Safety Authority. The "
               "assessment weighs both the risk of infection and the risk of severe disease."), "§6.2")
    m.say(Text("Formålet med vaccinationen er at forebygge alvorlig sygdom. Vaccinen er Imvanex®, den eneste vaccine "
               "mod mpox, der er godkendt i EU.",
               "The purpose of the vaccination is to prevent severe disease. The vaccine is Imvanex®, the one vaccine "
               "against mpox approved in the EU."), "§6")
    m.say(Text("Brug af Imvanex® som PEP er uden for godkendelsesgrundlaget og dermed off label. Derfor har du krav på "
               "særlig grundig information, før du giver samtykke til vaccinationen, og indikationen, begrundelsen og "
               "dit informerede samtykke skrives omhyggeligt i din journal.",
               "Using Imvanex® as PEP is outside its marketing authorisation, that is off label. You are therefore "
               "entitled to particularly thorough information before you consent to the vaccination, and the "
               "indication, the justification and your informed consent are carefully recorded in your medical "
               "record."), "§6", "§6.2")
    m.say(Text("Vaccinens sikkerhed og effekt er ikke undersøgt hos gravide, ammende og børn under 12 år. De kan "
               "tilbydes PEP efter en konkret lægelig vurdering af, at fordelene (at forebygge alvorlig sygdom) er "
               "større end de mulige ulemper (risikoen for mulige alvorlige bivirkninger).",
               "The vaccine's safety and effect have not been studied in pregnant or breastfeeding women or children "
               "under 12. They may be offered PEP after a specific medical assessment that the benefits (preventing "
               "severe disease) outweigh the possible drawbacks (the risk of possible serious side effects)."),
          "§6.2.1", "§6.2.2")
    m.part(Text("Hvornår og hvor mange doser", "When, and how many doses"))
    if exposure is not None and best is not None and latest is not None:
        m.say(Text("Den første dosis bør gives inden for {optimal} dage efter udsættelsen for smitte ({exposure}), "
                   "dvs. senest {best}, for at give den bedste effekt. I særlige tilfælde kan den gives op til "
                   "{latest_days} dage efter, dvs. senest {latest}.",
                   "The first dose should be given within {optimal} days of the exposure ({exposure}), that is by "
                   "{best}, for the best effect. In special cases it can be given up to {latest_days} days after, that "
                   "is by {latest}."), "§6.2", optimal=optimal_days, exposure=exposure, best=best,
              latest_days=latest_days, latest=latest)
    interval = m.days("dose2_due", 28)
    if m.view.get("doses_planned") == 1:
        m.say(Text("Du tilbydes 1 dosis.", "You are offered 1 dose."), "§6.4")
    else:
        m.say(Text("Du tilbydes 2 doser med mindst {interval} dage imellem.",
                   "You are offered 2 doses at least {interval} days apart."), "§6.4", interval=interval)
    m.say(Text("Har du tidligere haft mpox, skal du ikke vaccineres. Får du mpox efter den første dosis, gives den "
               "anden dosis ikke.",
               "If you have had mpox before, you should not be vaccinated. If you get mpox after the first dose, the "
               "second dose is not given."), "§6.3")
    return m.sheet(Text("Information om vaccination efter udsættelse for smitte (PEP)",
                        "Information about vaccination after exposure (PEP)"),
                   Text("Du tilbydes vaccination mod mpox, fordi du har været udsat for smitte. Læs denne information, "
                        "før du giver samtykke til vaccinationen.",
                        "You are offered vaccination against mpox because you have been exposed. Read this "
                        "information before you consent to the vaccination."))


_BUILDERS = {"suspected": _suspected, "confirmed": _confirmed, "contact": _contact, "pep": _pep}


# ---- plain text ----------------------------------------------------------------------------------------------------


def plain_text(sheet: Sheet, width: int = 100) -> str:
    """The sheet as plain text (the command line; an e-mail's body): title, lead, key dates, each part's
    paragraphs with their citations, the source and the footer."""
    import textwrap

    def wrapped(text: str, indent: str = "") -> list[str]:
        return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False, break_long_words=False) or [indent]

    lines = [sheet.title, "=" * min(len(sheet.title), width), "", *wrapped(sheet.lead), ""]
    if sheet.dates:
        lines.append(sheet.labels["dates"] + ":")
        lines.extend(f"  {d.label}: {d.text}" for d in sheet.dates)
        lines.append("")
    for part in sheet.parts:
        lines.extend([part.heading, "-" * min(len(part.heading), width)])
        for paragraph in part.paragraphs:
            lines.extend(wrapped(paragraph.text + " (" + ", ".join(paragraph.cites) + ")", "  "))
            lines.append("")
    lines.extend(wrapped(f"{sheet.labels['sources']}: {sheet.labels['guideline']}"))
    lines.append(sheet.labels["made"])
    return "\n".join(lines)
