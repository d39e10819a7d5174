"""The gateway's users: a JSON file in the data dir, passwords hashed with argon2id.

The file (``users.json``, mode 0600) is replaced atomically on every change
(write a temporary file, fsync, rename), under an ``flock`` so that the CLI
and a running gateway (rehash-on-verify) never lose each other's writes.
Readers never lock: they see the old file or the new one, and a running
gateway notices a change by the file's identity (inode, size, mtime).

Each user has a ``generation`` that grows with every password change or
role change; sessions remember it, so changing a password ends the
sessions opened with the old one. A new user's first generation is random,
so removing a user and creating one of the same name does not revive the
removed user's sessions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shared.contract import format_time, utcnow
from shared.journal.snapshot import write_durably

ROLE_SUPER_ADMIN: Final = "super_admin"
ROLE_ADMIN: Final = "admin"
ROLES: Final = (ROLE_SUPER_ADMIN, ROLE_ADMIN)

MIN_PASSWORD_LENGTH: Final = 12
#: Longer input is refused before hashing: nobody types that, and it bounds the work per attempt.
MAX_PASSWORD_LENGTH: Final = 1024
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

T = TypeVar("T")

USERS_FILE: Final = "users.json"
_LOCK_FILE: Final = "users.lock"


class UserError(ValueError):
    """A user operation cannot be done (message is one line meant for a human)."""


class NoSuchUser(UserError):
    """The named user does not exist."""


class UserExists(UserError):
    """A user of that name (or one too like it) exists already."""


class UserFileCorrupt(Exception):
    """The users file exists but cannot be read as a users file."""


@attrs.frozen(kw_only=True)
class UserRecord:
    """One stored user: name, role, argon2id hash and credential generation."""

    name: str
    role: str
    password_hash: str = attrs.field(repr=False)
    generation: int = 1
    created_at: str | None = None
    password_changed_at: str | None = None
    #: The password was generated (first admin, added or reset by someone else): it must be changed first.
    must_change_password: bool = False
    #: A disabled user cannot sign in; their sessions ended when they were disabled.
    disabled: bool = False
    last_sign_in_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the on-disk shape (the flags only when set, so older gateways read the file unchanged)."""
        out: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "hash": self.password_hash,
            "generation": self.generation,
            "createdAt": self.created_at,
            "passwordChangedAt": self.password_changed_at,
        }
        if self.must_change_password:
            out["mustChangePassword"] = True
        if self.disabled:
            out["disabled"] = True
        if self.last_sign_in_at is not None:
            out["lastSignInAt"] = self.last_sign_in_at
        return out

    @classmethod
    def from_json(cls, raw: Any) -> UserRecord:
        """Parse the on-disk shape; raises :class:`UserFileCorrupt` on anything else."""
        try:
            rec = cls(
                name=str(raw["name"]),
                role=str(raw["role"]),
                password_hash=str(raw["hash"]),
                generation=int(raw.get("generation", 1)),
                created_at=raw.get("createdAt"),
                password_changed_at=raw.get("passwordChangedAt"),
                must_change_password=raw.get("mustChangePassword") is True,
                disabled=raw.get("disabled") is True,
                last_sign_in_at=raw.get("lastSignInAt"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserFileCorrupt(f"bad user entry: {exc}") from None
        if rec.role not in ROLES:
            raise UserFileCorrupt(f"user {rec.name!r} has unknown role {rec.role!r}")
        return rec


def generate_password() -> str:
    """A one-time password to show once: 24 URL-safe characters (144 random bits), to be changed at first sign-in."""
    return secrets.token_urlsafe(18)


def first_generation() -> int:
    """A new user's first credential generation: random, so no session of an earlier same-named user matches."""
    return secrets.randbits(52) + 1


#: Names nobody may take: ``system`` is the actor the engine records its own transitions under.
RESERVED_NAMES: Final = frozenset({"system"})
#: The entries of Unicode TR39's confusables.txt among the characters a name may hold (ASCII
#: letters, digits and ``. _ @ -``): each character to the prototype it is mistaken for.
_CONFUSABLE_PROTOTYPES: Final = str.maketrans({"0": "O", "1": "l", "I": "l", "m": "rn"})


def name_keys(name: str) -> tuple[str, str]:
    """Return the two forms under which people cannot tell names apart; equal in either means a clash.

    Both start from NFKC (full-width and compatibility forms become plain
    ones): the case-folded form (``Alice``/``ALICE``), and TR39's skeleton
    with the confusable prototypes (``0``/``O``, ``1``/``I``/``l``,
    ``m``/``rn``), then case-folded. Letters of other scripts that look Latin
    (Cyrillic ``а``) never reach a name: the name pattern admits ASCII only.
    """
    plain = unicodedata.normalize("NFKC", name)
    return plain.casefold(), plain.translate(_CONFUSABLE_PROTOTYPES).casefold().translate(_CONFUSABLE_PROTOTYPES)


def _clash(name: str, others: Iterable[str]) -> str | None:
    """The first of ``others`` that ``name`` cannot be told apart from (:func:`name_keys`), or ``None``."""
    folded, skeleton = name_keys(name)
    for other in others:
        other_folded, other_skeleton = name_keys(other)
        if folded == other_folded or skeleton == other_skeleton:
            return other
    return None


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise :class:`UserError`.

    Valid: 1-64 ASCII letters, digits and ``. _ @ -`` starting with a letter
    or digit, and not a reserved name (:data:`RESERVED_NAMES`) in any case or
    confusable spelling (:func:`name_keys`).
    """
    if not _NAME_RE.fullmatch(name):
        raise UserError(
            "user name must be 1-64 characters of letters, digits and . _ @ -, starting with a letter or digit"
        )
    reserved = _clash(name, RESERVED_NAMES)
    if reserved is not None:
        raise UserError(f"user name {name!r} is reserved (it reads as {reserved!r}, a name the system uses)")
    return name


def validate_role(role: str) -> str:
    """Return ``role`` if it is a known role, else raise :class:`UserError`."""
    if role not in ROLES:
        raise UserError(f"role must be one of: {', '.join(ROLES)}")
    return role


def validate_password(password: str) -> str:
    """Return ``password`` if acceptable (12 to 1024 characters), else raise :class:`UserError`."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


class UserStore:
    """The users file of one data dir.

    Every method is synchronous and may block (file I/O, argon2): call it
    from a thread in async code (:func:`asyncio.to_thread`).
    """

    def __init__(self, data_dir: Path, *, hasher: PasswordHasher | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / USERS_FILE
        self.hasher = hasher or PasswordHasher()
        self._cache_key: tuple[int, int, int] | None = None
        self._checked_at = 0.0
        #: Seconds between checks of the file for changes by another process.
        self.recheck = 1.0
        self._cache: dict[str, UserRecord] = {}
        self._dummy_hash: str | None = None

    # -- reading -----------------------------------------------------------

    def load(self) -> dict[str, UserRecord]:
        """Return all users by name, re-reading the file only when it changed.

        The file is checked at most every :attr:`recheck` seconds (every
        request asks, and a ``stat`` each time is measurable); writes through
        this store are seen at once, another process's within that delay.
        """
        now = time.monotonic()
        if self._cache_key is not None and now - self._checked_at < self.recheck:
            return self._cache
        self._checked_at = now
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._cache_key, self._cache = None, {}
            return {}
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key != self._cache_key:
            self._cache = self._read()
            self._cache_key = key
        return self._cache

    def _read(self) -> dict[str, UserRecord]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserFileCorrupt(f"{self.path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("users"), list):
            raise UserFileCorrupt(f"{self.path} has no 'users' list")
        users = [UserRecord.from_json(u) for u in raw["users"]]
        return {u.name: u for u in users}

    def get(self, name: str) -> UserRecord | None:
        """Return the user called ``name``, or ``None``."""
        return self.load().get(name)

    def list_users(self) -> list[UserRecord]:
        """Return every user, sorted by name."""
        return sorted(self.load().values(), key=lambda u: u.name)

    # -- writing -----------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, UserRecord]]:
        """Hold the write lock and yield a fresh copy of the users; the copy is saved on exit."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.data_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            users = dict(self._read())
            yield users
            self._write(users)
        finally:
            os.close(fd)  # closing releases the flock

    def _write(self, users: dict[str, UserRecord]) -> None:
        body = json.dumps({"version": 1, "users": [users[n].to_json() for n in sorted(users)]}, indent=2)
        write_durably(self.path, [(body + "\n").encode()])
        self._cache_key = None  # our own write: re-read at the next look

    def update(self, change: Callable[[dict[str, UserRecord]], T]) -> T:
        """Apply ``change`` to a fresh copy of all users under the write lock, save, and return its result.

        ``change`` mutates the mapping it gets (add, replace, delete records)
        or raises (a :class:`UserError`) to save nothing. Every change of users
        goes through here or the methods below, so two writers never lose each
        other's changes.
        """
        with self._locked() as users:
            return change(users)

    def add(self, name: str, role: str, password: str, *, must_change: bool = False) -> UserRecord:
        """Create a user; raises :class:`UserError` if it exists or an argument is invalid.

        ``must_change``: the password was generated for them; they must change it at first sign-in.
        """
        validate_name(name)
        validate_role(role)
        validate_password(password)
        password_hash = self.hasher.hash(password)
        now = format_time(utcnow())
        with self._locked() as users:
            if name in users:
                raise UserExists(f"user {name!r} already exists")
            twin = _clash(name, users)
            if twin is not None:
                raise UserExists(
                    f"user name {name!r} is too like the existing user {twin!r} "
                    "(names may not differ only in case or in look-alike characters)"
                )
            rec = UserRecord(
                name=name,
                role=role,
                password_hash=password_hash,
                generation=first_generation(),
                created_at=now,
                password_changed_at=now,
                must_change_password=must_change,
            )
            users[name] = rec
        return rec

    def remove(self, name: str) -> None:
        """Delete a user (their sessions die with them); raises :class:`UserError` if unknown."""
        with self._locked() as users:
            if users.pop(name, None) is None:
                raise NoSuchUser(f"no user {name!r}")

    def set_password(self, name: str, password: str, *, must_change: bool = False) -> UserRecord:
        """Replace a user's password and end their existing sessions (new generation).

        ``must_change``: a generated password (a reset): it must be changed at the next sign-in.
        """
        validate_password(password)
        password_hash = self.hasher.hash(password)
        with self._locked() as users:
            rec = users.get(name)
            if rec is None:
                raise NoSuchUser(f"no user {name!r}")
            rec = attrs.evolve(
                rec,
                password_hash=password_hash,
                generation=rec.generation + 1,
                password_changed_at=format_time(utcnow()),
                must_change_password=must_change,
            )
            users[name] = rec
        return rec

    def ensure_admin(self, name: str = "admin") -> str | None:
        """If there is no user at all, create ``name`` as super_admin with a random password.

        The password is generated, so it must be changed at the first sign-in.
        Returns that password (to be shown once), or ``None`` when users exist.
        Raises :class:`UserError` for a name :func:`validate_name` refuses.
        """
        validate_name(name)
        with self._locked() as users:
            if users:
                return None
            password = generate_password()
            now = format_time(utcnow())
            users[name] = UserRecord(
                name=name,
                role=ROLE_SUPER_ADMIN,
                password_hash=self.hasher.hash(password),
                generation=first_generation(),
                created_at=now,
                password_changed_at=now,
                must_change_password=True,
            )
        return password

    # -- verifying ---------------------------------------------------------

    def warm(self) -> None:
        """Compute the dummy hash now, so the first unknown-user login costs what the others do."""
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))

    def verify(self, name: str, password: str) -> UserRecord | None:
        """Return the user if ``password`` is theirs, else ``None``.

        An unknown user costs one argon2 verification too (against a dummy
        hash), so a wrong name and a wrong password take about as long. A
        correct password stored with outdated parameters is rehashed.
        """
        self.warm()
        assert self._dummy_hash is not None
        rec = self.get(name) if _NAME_RE.fullmatch(name) else None
        if rec is None or len(password) > MAX_PASSWORD_LENGTH:
            with contextlib.suppress(VerificationError, InvalidHashError):
                self.hasher.verify(self._dummy_hash, password[:MAX_PASSWORD_LENGTH])
            return None
        try:
            self.hasher.verify(rec.password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if self.hasher.check_needs_rehash(rec.password_hash):
            self._rehash(rec, password)
        return rec

    def _rehash(self, rec: UserRecord, password: str) -> None:
        new_hash = self.hasher.hash(password)
        with self._locked() as users:
            current = users.get(rec.name)
            # Only if nobody changed the password meanwhile; the generation stays: same password.
            if current is not None and current.password_hash == rec.password_hash:
                users[rec.name] = attrs.evolve(current, password_hash=new_hash)
