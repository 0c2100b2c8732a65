"""Users and accounts: the users and their roles (``Users``), and who is logged in (``Accounts``): passwords,
browser sessions, API tokens, and the failed-login rate limit.

Passwords are stored as argon2 hashes (``pwdlib``); a session's or token's secret is a random string the client
holds, and the database keeps only its SHA-256, so a copy of the database logs nobody in. Sessions, tokens and
failed logins live in the database, not in a process, so any number of HTTP instances share them.

Adding a user, setting a password, disabling, enabling and changing a role, issuing and revoking a token, logging
in, failing to and logging out are appended to the user's own audit chain, each in a unit of work
(``engine.uow``), which also authorizes the admin who asks. Times here are the wall clock's (a simulated case
clock does not expire a session).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Protocol

import structlog
from sqlalchemy.exc import IntegrityError

from engine.units import UnitTree, memberships_from, return_to_pool
from engine.uow import ADMIN_ROLES, TIMER_USER, USER_ROLES, Actor, Runtime, UnitOfWork, unit_of_work
from engine.views import instant, user_view
from persistence.audit import Head
from persistence.database import DuplicateKey
from persistence.models import ROOT_UNIT
from persistence.repository import Repository, format_id
from workflows.errors import (
    Conflict,
    NotAuthenticated,
    NotFound,
    NotPermitted,
    RuleRefused,
    TooManyAttempts,
    UsageError,
)
from workflows.limits import MAX_ID, check_text, shown

log = structlog.get_logger("mpoxflow.accounts")
log_engine = structlog.get_logger("mpoxflow.engine")

#: A browser session lasts one long shift, then the user logs in again.
SESSION_LIFETIME = timedelta(hours=12)
#: The rate limit: at most this many failed logins per user name, and per address, within the window.
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_NAME = 5
MAX_FAILURES_PER_ADDRESS = 20
#: Once a name has its failures from other addresses, one attempt per this interval from a new address.
SLOW_ATTEMPT_INTERVAL = timedelta(minutes=1)
MIN_PASSWORD_LENGTH = 10
#: The languages of the pages a user may choose (issue 16): Danish first, English second.
LANGUAGES = ("da", "en")

class Hasher(Protocol):
    """What a ``pwdlib.PasswordHash`` does for the accounts."""

    def hash(self, password: str) -> str: ...

    def verify(self, password: str, hash: str) -> bool: ...

    def verify_and_update(self, password: str, hash: str) -> tuple[bool, str | None]: ...


class _Recommended:
    """pwdlib's ``PasswordHash.recommended()`` (argon2id with its recommended parameters), made on first use: a
    command that neither sets nor checks a password never loads pwdlib and argon2."""

    def __init__(self) -> None:
        self._made: Hasher | None = None

    def _hasher(self) -> Hasher:
        if self._made is None:
            from pwdlib import PasswordHash

            self._made = PasswordHash.recommended()
        return self._made

    def hash(self, password: str) -> str:
        return self._hasher().hash(password)

    def verify(self, password: str, hash: str) -> bool:
        return self._hasher().verify(password, hash)

    def verify_and_update(self, password: str, hash: str) -> tuple[bool, str | None]:
        return self._hasher().verify_and_update(password, hash)


#: argon2id with pwdlib's recommended parameters. Tests swap in a ``PasswordHash`` with cheaper parameters.
password_hash: Hasher = _Recommended()
#: Checked when the user name is unknown, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH: str | None = None


def digest(secret: str) -> str:
    """What the database keeps of a session's or a token's secret: its SHA-256 (the secret is a long random
    string, so a fast hash is enough, and a lookup costs no more than an index read)."""
    return hashlib.sha256(secret.encode()).hexdigest()


_digest = digest


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = password_hash.hash(secrets.token_urlsafe(16))
    return _DUMMY_HASH


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters: choose a longer one "
                         "(a passphrase of a few words is easy to type and hard to guess)")


class Users:
    """The users of a database and their roles: the first admin and the scheduler's user, and the users admins
    add. (Who is logged in is ``Accounts``.)"""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @staticmethod
    def check_new_user(name: str, role: str) -> str:
        """The user name to register (stripped); UsageError for a bad name or role."""
        name = check_text(name.strip(), "name")
        if not name or name.startswith("timer:"):
            raise UsageError(f"'{name}' cannot be a user name: give 1 to 128 characters, not starting with 'timer:' "
                             "(the scheduler's actors)")
        if role not in USER_ROLES:
            raise UsageError(f"'{shown(role)}' is not a role a user can have: use one of {', '.join(USER_ROLES)}")
        return name

    def add_user(self, name: str, role: str, *, actor: str, reason: str | None = None,
                 password_hash: str | None = None, units: Sequence[str] = ()) -> dict[str, Any]:
        """Register a user with a role (staff, auditor, admin), with a password hash to log in with
        (``Accounts.add_user`` makes it) or none (API tokens only); returns the user's view. Only an admin may
        (NotPermitted, audited). Raises UsageError for a bad name or role, RuleRefused when the name is taken."""
        name = self.check_new_user(name, role)
        with unit_of_work(self.runtime, actor, "user add", None, ADMIN_ROLES) as uow:
            view = _insert_user(uow, name, role, uow.actor, reason, password_hash, units=_memberships(uow, units))
            uow.commit()
        return view

    def bootstrap_users(self, first_admin: str) -> list[dict[str, Any]]:
        """On a database without users: the scheduler's ``timer`` user and ``first_admin`` as its first admin
        (the one who created the database), both audited; returns their views. Does nothing (returns []) when
        there are users, also when another process made them at the same moment."""
        with self.runtime.db.reading() as session:
            if Repository(session).has_users():
                return []
        try:
            with unit_of_work(self.runtime) as uow:
                if uow.repo.has_users():
                    return []
                admin = Actor(first_admin, "admin")
                made = [_insert_user(uow, first_admin, "admin", admin, "first admin: created the database",
                                     units=[(ROOT_UNIT, "lead")])]
                if first_admin != TIMER_USER:
                    made.append(_insert_user(uow, TIMER_USER, TIMER_USER, admin,
                                             "the scheduler: actor of every timer's firing"))
                uow.commit()
            return made
        except (IntegrityError, DuplicateKey):
            # Several processes started on the new database at once (every one makes the `timer` user): the
            # first one's users stand, the others' transactions are rolled back.
            with self.runtime.db.reading() as session:
                if Repository(session).has_users():
                    return []
            raise


def _memberships(uow: UnitOfWork, given: Sequence[str]) -> list[tuple[int, str]]:
    return memberships_from(UnitTree.load(uow.repo), given)


def _insert_user(uow: UnitOfWork, name: str, role: str, who: Actor, reason: str | None,
                 password_hash: str | None = None, units: Sequence[tuple[int, str]] = ()) -> dict[str, Any]:
    """Insert and audit one user, a member of ``units`` (unit, role there); RuleRefused when the name is taken."""
    repo = uow.repo
    existing = repo.user_by_name(name)
    if existing is not None:
        raise RuleRefused(f"there is already a user named so: {format_id('user', existing.id)} "
                          f"({existing.role}); see `mpoxflow user list`")
    now = uow.now()
    pk = repo.insert_user({"name": name, "role": role, "created_at": now, "audit_pos": None,
                           "audit_seq": None, "audit_hash": None, "password_hash": password_hash})
    changes = {"name": name, "role": role} | ({"password": "(set)"} if password_hash else {})
    for unit, unit_role in units:
        repo.insert_membership({"user_id": pk, "unit_id": unit, "role": unit_role, "created_at": now})
    data: dict[str, Any] = {"role": role}
    if units:
        data["units"] = [{"unit": format_id("unit", u), "role": r} for u, r in units]
    uow.audit(Head.of(None), kind="user", pk=pk, workflow=None, trigger="add", from_state=None,
              to_state=None, actor=who, reason=reason, now=now, rule=None, data=data,
              changes=changes)
    log_engine.info("user_added", user=format_id("user", pk), role=role)
    return user_view(SimpleNamespace(id=pk, name=name, role=role, created_at=now, password_hash=password_hash))


@dataclass(frozen=True)
class Login:
    """A logged-in user: through a browser session (with its CSRF token) or an API token."""

    user_id: int
    name: str
    role: str
    session_id: int | None = None
    csrf: str | None = None
    token_id: int | None = None
    #: The language the user chose for the pages (``LANGUAGES``), or None: none chosen.
    language: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.role)


class HasRuntime(Protocol):
    """What ``Accounts`` is made from: an ``engine.core.Engine`` (whose runtime it shares)."""

    runtime: Runtime


class Accounts:
    """Logins over an engine's database (``Accounts(engine)``), each change in a unit of work."""

    def __init__(self, engine: HasRuntime) -> None:
        self.runtime = engine.runtime
        self.users = Users(self.runtime)

    def _now(self) -> datetime:
        return self.runtime.wall_clock.now()

    @staticmethod
    def _audit_user(uow: UnitOfWork, pk: int, trigger: str, actor: Actor, *, reason: str | None = None,
                    data: dict[str, Any] | None = None, changes: dict[str, Any] | None = None) -> int:
        """Append an entry to user ``pk``'s own chain (its head moves with it); returns its sequence number."""
        return uow.audit(
            Head.of(uow.repo.head_row("user", pk)), kind="user", pk=pk, workflow=None, trigger=trigger,
            from_state=None, to_state=None, actor=actor, reason=reason, now=uow.now(), rule=None,
            data=data or {}, changes=changes,
        ).seq or 0

    # ---- passwords -----------------------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str | None, *, actor: str,
                 reason: str | None = None, units: Sequence[str] = ()) -> dict[str, Any]:
        """A new user with a password (None: no password login, for a system that uses API tokens), a member of
        ``units`` (``UNIT`` or ``UNIT:lead``; none: the root while it is the only unit)."""
        _check_reason(reason)
        if password is not None:
            check_password_rules(password)
        hashed = password_hash.hash(password) if password is not None else None
        return self.users.add_user(name, role, actor=actor, reason=reason, password_hash=hashed, units=units)

    def set_password(self, name: str, password: str, *, actor: str, reason: str | None = None,
                     keep_session: int | None = None, current_password: str | None = None,
                     require_current: bool = False, address: str = "") -> dict[str, Any]:
        """Set a user's password: an admin for anyone, any user for themselves. Every session of the user ends,
        except ``keep_session`` when the user changes their own password in it. The hash never enters the log.

        ``require_current`` (the API and the pages): a user changing their own password must give the current
        one (``current_password``), so a borrowed session cannot take the account over; an admin setting someone
        else's needs none. A wrong current password counts as a failed login for the name from ``address``
        (the client's), under the same limits (TooManyAttempts), so it cannot be guessed through this door."""
        _check_reason(reason)
        check_password_rules(password)
        hashed = password_hash.hash(password)
        own = actor == name and (require_current or current_password is not None)
        reserved = self._reserve_attempt(name, address) if own else None
        with unit_of_work(self.runtime) as uow:
            repo = uow.repo
            user = repo.user_by_name(name)
            if user is None:
                raise NotFound(name, "user", hint="`mpoxflow user list` shows the users.")
            if actor == name and user.role != TIMER_USER:
                # Refuses (and audits) a disabled user; any role may set its own password.
                who = uow.authorize(actor, "user password", format_id("user", user.id), (user.role,))
                if own:
                    self._check_current(user, current_password)
            else:
                who = uow.authorize(actor, "user password", format_id("user", user.id), ADMIN_ROLES)
            if user.role == TIMER_USER:
                raise UsageError("the timer user is the scheduler's own and never logs in: it takes no password")
            repo.set_password_hash(user.id, hashed)
            # A new password ends the sessions opened with the old one (a stolen cookie dies with it).
            ended = repo.delete_sessions_of(user.id, keep=keep_session if actor == name else None)
            self._audit_user(uow, user.id, "password_set", who, reason=reason, changes={"password": "(set)"},
                             data={"sessions_ended": ended})
            if reserved is not None:  # the right current password: the attempt is not a failure
                repo.delete_login_failure(reserved)
            uow.commit()
        log.info("password_set", user=format_id("user", user.id))
        return {"id": format_id("user", user.id), "kind": "user", "name": user.name, "password": "set"}

    def _reserve_attempt(self, name: str, address: str) -> int:
        """Count an attempt at a user's password (login or current password) as a failure before it is checked,
        in a transaction of its own, refusing it over the limits; returns the failure's id to withdraw."""
        with unit_of_work(self.runtime) as uow:
            uow.repo.lock_login(name[:128], address[:64])
            reserved = self._check_rate(uow.repo, name[:128], address[:64], self._now())
            uow.commit()
        return reserved

    @staticmethod
    def _check_current(user: Any, current_password: str | None) -> None:
        if not current_password:
            raise UsageError("current_password: give your current password to set a new one")
        ok = user.password_hash is not None and password_hash.verify(current_password, user.password_hash)
        if not ok:
            raise NotPermitted("current_password: that is not your current password, so it was not changed. "
                               "This refusal is recorded in the audit log", actor=user.name, role=user.role,
                               user=user.id, command="user password", target=format_id("user", user.id))

    # ---- the language of the pages ----------------------------------------------------------------------

    def set_language(self, name: str, language: str | None, *, actor: str) -> dict[str, Any]:
        """Set the language ``name`` reads the pages in (``da``, ``en``; None: none chosen, the browser decides).
        A user sets their own; an admin anyone's. Appended to the user's audit chain like any account change."""
        if language is not None and language not in LANGUAGES:
            raise UsageError(f"'{shown(language)}' is not a language of the pages: choose one of "
                             f"{', '.join(LANGUAGES)}")
        with unit_of_work(self.runtime, actor, "user language", None, USER_ROLES) as uow:
            repo = uow.repo
            user = repo.user_by_name(name)
            if user is None:
                raise NotFound(shown(name), "user")
            if user.name != uow.actor.name and uow.actor.role not in ADMIN_ROLES:
                raise NotPermitted("only an admin sets another user's language", actor=uow.actor.name,
                                   role=uow.actor.role, user=user.id, command="user language",
                                   target=format_id("user", user.id))
            before = user.language
            if before != language:
                repo.set_user(user.id, language=language)
                self._audit_user(uow, user.id, "language_set", uow.actor,
                                 changes={"language": language}, data={"from_language": before})
            uow.commit()
        log.info("user_language", user=format_id("user", user.id), language=language)
        return {"id": format_id("user", user.id), "kind": "user", "name": user.name, "language": language}

    # ---- disabling and roles (admins) ----------------------------------------------------------------------

    def set_disabled(self, name: str, disabled: bool, *, actor: str, reason: str | None = None) -> dict[str, Any]:
        """Disable a user (their sessions end and their tokens stop at once; they can neither log in nor act) or
        enable them again (their unrevoked tokens work again; they log in anew). Admins only, not on themselves."""
        _check_reason(reason)
        command = "user disable" if disabled else "user enable"
        with unit_of_work(self.runtime, actor, command, None, ADMIN_ROLES) as uow:
            repo = uow.repo
            user = self._managed_user(repo, name, actor, command)
            ended = 0
            if disabled and user.disabled_at is None:
                repo.set_user(user.id, disabled_at=self._now())
                ended = repo.delete_sessions_of(user.id)
                # No task is left with someone who cannot do it: their work goes back to its units' pools.
                returned = return_to_pool(uow, user.id, f"{name} was disabled", uow.now())
                self._audit_user(uow, user.id, "disabled", uow.actor, reason=reason,
                                 changes={"disabled": True}, data={"sessions_ended": ended, "returned": returned})
            elif not disabled and user.disabled_at is not None:
                repo.set_user(user.id, disabled_at=None)
                self._audit_user(uow, user.id, "enabled", uow.actor, reason=reason, changes={"disabled": False})
            view = user_view(repo.user_by_name(name))
            uow.commit()
        log.info("user_disabled" if disabled else "user_enabled", user=view["id"], sessions_ended=ended)
        return view

    def set_role(self, name: str, role: str, *, actor: str, reason: str | None = None) -> dict[str, Any]:
        """Change a user's role (admins only, not their own); it applies to their next request."""
        _check_reason(reason)
        if role not in USER_ROLES:
            raise UsageError(f"⟦role⟧: '{shown(role)}' is not a role a user can have: use one of "
                             f"{', '.join(USER_ROLES)}")
        with unit_of_work(self.runtime, actor, "user role", None, ADMIN_ROLES) as uow:
            repo = uow.repo
            user = self._managed_user(repo, name, actor, "user role")
            if user.role != role:
                repo.set_user(user.id, role=role)
                returned = (return_to_pool(uow, user.id, f"{name} is an auditor now", uow.now())
                            if role == "auditor" else [])
                self._audit_user(uow, user.id, "role_changed", uow.actor, reason=reason,
                                 changes={"role": role}, data={"from_role": user.role, "returned": returned})
            view = user_view(repo.user_by_name(name))
            uow.commit()
        log.info("user_role_set", user=view["id"], role=role)
        return view

    @staticmethod
    def _managed_user(repo: Repository, name: str, actor: str, command: str) -> Any:
        """The user an admin (authorized already) disables, enables or gives a role: not the admin themselves,
        not the timer user. NotFound, UsageError, RuleRefused otherwise."""
        user = repo.user_by_name(name)
        if user is None:
            raise NotFound(name, "user", hint="`mpoxflow user list` shows the users.")
        if user.role == TIMER_USER:
            raise UsageError("the timer user is the scheduler's own: it cannot be disabled or given a role")
        if user.name == actor:
            raise RuleRefused(f"'{command}' on yourself is refused: another admin must do it (so there is always "
                              "an admin who can undo it)")
        return user

    # ---- logging in ----------------------------------------------------------------------------------------

    def login(self, name: str, password: str, address: str) -> tuple[Login, str]:
        """Check a name and password; returns the login and the session secret for the cookie.

        Refused with TooManyAttempts (the password is then not even checked) when ``MAX_FAILURES_PER_ADDRESS``
        failures from the address, or ``MAX_FAILURES_PER_NAME`` failures for the name from this address, fall
        within ``FAILURE_WINDOW``; once the name has that many failures from other addresses, an attempt from a
        new address is let through at most once per ``SLOW_ATTEMPT_INTERVAL`` (the name slows, it does not lock
        out its owner elsewhere). With NotAuthenticated for a wrong name or password (the message does not say
        which).

        Parallel attempts: the check and the count are one short transaction, serialised per name and address;
        the attempt is counted as a failure before the (slow) password check and the count is withdrawn when the
        password is right, so 20 parallel wrong passwords check at most 5."""
        name, address = name[:128], address[:64]
        now = self._now()
        reserved = self._reserve_attempt(name, address)
        with self.runtime.db.reading() as session:
            user = Repository(session).user_by_name(name)
        stored = user.password_hash if user is not None else None
        ok, rehashed = password_hash.verify_and_update(password, stored or _dummy_hash())
        failed = not ok or user is None or stored is None
        for attempt in range(3):  # parallel logins of one user queue on its row; a lost race is retried
            try:
                with unit_of_work(self.runtime) as uow:
                    repo = uow.repo
                    if failed:
                        if user is not None and user.role != TIMER_USER:
                            repo.lock_user(user.id)
                            self._audit_user(uow, user.id, "login_failed", Actor(user.name, user.role),
                                             data={"address": address})
                    elif user is not None and user.disabled_at is not None:
                        # The right password of a disabled user: refused, audited.
                        repo.lock_user(user.id)
                        self._audit_user(uow, user.id, "login_refused", Actor(user.name, user.role),
                                         data={"address": address, "why": "disabled"})
                    else:
                        assert user is not None
                        repo.lock_user(user.id)
                        if rehashed is not None:  # hashed with older parameters: stored anew with today's
                            repo.set_password_hash(user.id, rehashed)
                        repo.delete_login_failure(reserved)
                        repo.clear_login_failures(name)
                        repo.delete_expired_sessions(now)
                        secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
                        session_id = repo.insert_session({"secret_hash": _digest(secret), "user_id": user.id,
                                                          "csrf": csrf, "created_at": now,
                                                          "expires_at": now + SESSION_LIFETIME})
                        self._audit_user(uow, user.id, "login", Actor(user.name, user.role),
                                         data={"session": session_id, "address": address})
                    uow.commit()
                break
            except Conflict:
                if attempt == 2:
                    if failed:  # the failure is counted already; the answer stays "wrong name or password"
                        break
                    raise
        if not failed and user is not None and user.disabled_at is not None:  # its attempt stays counted
            log.warning("login_refused", user=format_id("user", user.id), why="disabled")
            raise NotPermitted("this user is disabled, so the login was refused: ask an admin "
                               f"(`mpoxflow user enable {user.name}`)", actor=user.name, role=user.role,
                               user=user.id, command="login", target=None)
        if failed:  # the failure is committed (it counts for the rate limit) before the refusal
            log.warning("login_failed", user=format_id("user", user.id) if user is not None else None)
            raise NotAuthenticated("wrong user name or password: check both and try again")
        assert user is not None
        log.info("login", user=format_id("user", user.id), role=user.role, session=session_id)
        return Login(user.id, user.name, user.role, session_id=session_id, csrf=csrf), secret

    @staticmethod
    def _check_rate(repo: Repository, name: str, address: str, now: datetime) -> int:
        """Refuse (TooManyAttempts) an attempt over the limits, else count it as a failure; returns its id."""
        since = now - FAILURE_WINDOW
        failures = repo.name_failures(name, since)
        here = [at for at, where in failures if where == address]
        by_address, oldest_from_address = repo.login_failures("address", address, since)
        lifts = []
        if by_address >= MAX_FAILURES_PER_ADDRESS and oldest_from_address:
            lifts.append(oldest_from_address + FAILURE_WINDOW)
        if len(here) >= MAX_FAILURES_PER_NAME:
            lifts.append(here[0] + FAILURE_WINDOW)
        elif len(failures) >= MAX_FAILURES_PER_NAME and failures[-1][0] + SLOW_ATTEMPT_INTERVAL > now:
            lifts.append(failures[-1][0] + SLOW_ATTEMPT_INTERVAL)
        if lifts:
            # Each limit that is hit lifts at its own time: wait for the later.
            wait = int((max(lifts) - now).total_seconds()) + 1
            log.warning("login_rate_limited", failures_for_name=len(failures), failures_from_address=by_address,
                        retry_after=wait)
            raise TooManyAttempts(
                f"too many failed logins: wait {max(wait // 60, 1)} minute(s) and try again, or ask an admin "
                "to set a new password (`mpoxflow user password NAME`)", retry_after=max(wait, 1))
        return repo.add_login_failure(name, address, now)

    def session(self, secret: str) -> Login | None:
        """The login of a live session cookie, or None (unknown, logged out or expired)."""
        with self.runtime.db.reading() as session:
            return session_login(Repository(session), secret, self._now())

    def logout(self, secret: str) -> bool:
        """End the session (its row is deleted: the cookie no longer works anywhere)."""
        with unit_of_work(self.runtime) as uow:
            row = uow.repo.delete_session(_digest(secret))
            if row is None:
                return False
            user = uow.repo.head_row("user", row.user_id)
            self._audit_user(uow, row.user_id, "logout", Actor(user.name, user.role), data={"session": row.id})
            uow.commit()
        log.info("logout", user=format_id("user", row.user_id), session=row.id)
        return True

    # ---- API tokens ----------------------------------------------------------------------------------------

    def issue_token(self, name: str, label: str, *, actor: str, reason: str | None = None) -> dict[str, Any]:
        """A bearer token for a system acting as user ``name`` (admins only). The secret is in the result only:
        it is shown once and stored as its hash."""
        _check_reason(reason)
        label = check_text(label.strip(), "label")
        if not label:
            raise UsageError("give the token a label of 1 to 128 characters: which system uses it")
        with unit_of_work(self.runtime, actor, "user token", None, ADMIN_ROLES) as uow:
            repo = uow.repo
            user = repo.user_by_name(name)
            if user is None:
                raise NotFound(name, "user", hint="`mpoxflow user list` shows the users.")
            if user.role == TIMER_USER:
                raise UsageError("the timer user is the scheduler's own: issue the token to a staff or auditor user")
            secret = "mpx_" + secrets.token_urlsafe(32)
            pk = repo.insert_token({"secret_hash": _digest(secret), "user_id": user.id, "label": label,
                                    "created_at": self._now(), "revoked_at": None})
            self._audit_user(uow, user.id, "token_issued", uow.actor, reason=reason,
                             data={"token": format_id("token", pk), "label": label})
            uow.commit()
        log.info("token_issued", user=format_id("user", user.id), token=format_id("token", pk))
        return {"id": format_id("token", pk), "kind": "token", "user": user.name, "role": user.role, "label": label,
                "secret": secret}

    def revoke_token(self, token_id: str, *, actor: str, reason: str | None = None) -> dict[str, Any]:
        _check_reason(reason)
        prefix, _, number = token_id.partition("-")
        if prefix != "token" or not (number.isascii() and number.isdigit()) or len(number) > 10 \
                or int(number) > MAX_ID:
            raise UsageError(f"'{shown(token_id)}' is not a token id: they look like token-N "
                             "(`mpoxflow user tokens`)")
        with unit_of_work(self.runtime, actor, "user revoke", token_id, ADMIN_ROLES) as uow:
            token = uow.repo.token(int(number))
            if token is None:
                raise NotFound(shown(token_id), "token", hint="`mpoxflow user tokens` lists them.")
            if token.revoked_at is None:
                token.revoked_at = self._now()
                self._audit_user(uow, token.user_id, "token_revoked", uow.actor, reason=reason,
                                 data={"token": token_id})
            view = _token_view(token)
            uow.commit()
        log.info("token_revoked", token=token_id)
        return view

    def tokens(self) -> list[dict[str, Any]]:
        with self.runtime.db.reading() as session:
            return [_token_view(t) for t in Repository(session).tokens()]

    def token(self, secret: str) -> Login | None:
        """The login a bearer token stands for, or None (unknown or revoked)."""
        with self.runtime.db.reading() as session:
            return token_login(Repository(session), secret)


def token_login(repo: Repository, secret: str) -> Login | None:
    """The login a bearer token stands for, or None (unknown, revoked, or its user disabled): one lookup of the
    secret's SHA-256 (a token is a long random string, so no slow hash is needed, nor wanted on every request)."""
    row = repo.token_user(_digest(secret))
    return None if row is None else Login(row.user_id, row.name, row.role, token_id=row.id)


def session_login(repo: Repository, secret: str, now: datetime) -> Login | None:
    """The login of a live session cookie at ``now`` (the wall clock's), or None (unknown, logged out, expired,
    or its user disabled): one lookup of the secret's SHA-256."""
    row = repo.session_user(_digest(secret), now)
    return None if row is None else Login(row.user_id, row.name, row.role, session_id=row.id, csrf=row.csrf,
                                          language=row.language)


def _token_view(token: Any) -> dict[str, Any]:
    return {"id": format_id("token", token.id), "kind": "token", "user": format_id("user", token.user_id),
            "label": token.label, "created_at": instant(token.created_at), "revoked_at": instant(token.revoked_at)}


def _check_reason(reason: str | None) -> None:
    """A reason is checked before anything is looked up: an admin's change that would do nothing (enabling an
    enabled user) refuses a bad reason as any other change does."""
    if reason is not None:
        check_text(reason, "reason")
