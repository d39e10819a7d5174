"""The gateway's users: a JSON file in the data dir, passwords hashed with argon2id.

The file (``users.json``, mode 0600) is replaced atomically on every change
(write a temporary file, fsync, rename), under an ``flock`` so that the CLI
and a running gateway (rehash-on-verify) never lose each other's writes.
Readers never lock: they see the old file or the new one, and a running
gateway notices a change by the file's identity (inode, size, mtime).

Each user has a ``generation`` that grows with every password change,
role change and disabling; sessions remember it, so such a change ends the
sessions opened before it. A new user's first generation is random,
so removing a user and creating one of the same name does not revive the
removed user's sessions.

The file carries a ``revision`` that every write increments. Several
gateways share one users document through Redis (:attr:`UserStore.mirror`,
:mod:`admin_gateway.auth.user_sync`): a write publishes to the mirror by a
compare-and-set on that revision before touching the file, and
:meth:`UserStore.sync` brings file and mirror to the newer revision.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, Protocol, TypeVar

import attrs
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from admin_gateway.auth.user_records import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    NAME_RE,
    RESERVED_NAMES,
    ROLE_ADMIN,
    ROLE_SUPER_ADMIN,
    ROLES,
    NoSuchUser,
    UserError,
    UserExists,
    UserFileCorrupt,
    UserRecord,
    clash,
    first_generation,
    generate_password,
    name_keys,
    validate_name,
    validate_password,
    validate_role,
)
from shared.contract import format_time, utcnow
from shared.journal.snapshot import write_durably

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "RESERVED_NAMES",
    "ROLES",
    "ROLE_ADMIN",
    "ROLE_SUPER_ADMIN",
    "USERS_FILE",
    "NoSuchUser",
    "UserError",
    "UserExists",
    "UserFileCorrupt",
    "UserRecord",
    "UserStore",
    "first_generation",
    "generate_password",
    "name_keys",
    "validate_name",
    "validate_password",
    "validate_role",
]

T = TypeVar("T")


class UsersBusy(UserError):
    """Another gateway changed the users at the same moment: nothing was changed, try again."""


class UsersUnavailable(UserError):
    """The users mirror (Redis) cannot be reached: no change can be made that the other gateways would miss."""


class UserMirror(Protocol):
    """Where several gateways keep their one users document (Redis); every call may block and may raise
    :class:`UsersUnavailable`."""

    def fetch(self) -> tuple[int, str] | None:
        """The stored document (its revision and its text), or ``None``."""

    def publish(self, expected: int | None, revision: int, text: str) -> bool:
        """Store ``text`` as ``revision`` if the stored revision is still ``expected`` (``None``: none); say if so."""


def document_text(revision: int, users: dict[str, UserRecord]) -> str:
    """The users file's text: version, revision and the users by name."""
    body = {"version": 1, "revision": revision, "users": [users[n].to_json() for n in sorted(users)]}
    return json.dumps(body, indent=2) + "\n"


def parse_document(text: str, where: str) -> tuple[int, dict[str, UserRecord]]:
    """Parse :func:`document_text`'s shape (a file without ``revision`` is revision 0)."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise UserFileCorrupt(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("users"), list):
        raise UserFileCorrupt(f"{where} has no 'users' list")
    revision = raw.get("revision", 0)
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise UserFileCorrupt(f"{where} has a bad revision {revision!r}")
    users = [UserRecord.from_json(u) for u in raw["users"]]
    return revision, {u.name: u for u in users}


USERS_FILE: Final = "users.json"
_LOCK_FILE: Final = "users.lock"


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
        #: Where several gateways share their users (:mod:`admin_gateway.auth.user_sync`); ``None``: this file only.
        self.mirror: UserMirror | None = None
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
        return self._read_document()[1]

    def _read_document(self) -> tuple[int, dict[str, UserRecord]]:
        """The file's revision (0 for a file older than revisions) and its users."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0, {}
        except UnicodeDecodeError as exc:
            raise UserFileCorrupt(f"{self.path} is not valid JSON: {exc}") from None
        return parse_document(text, str(self.path))

    def get(self, name: str) -> UserRecord | None:
        """Return the user called ``name``, or ``None``."""
        return self.load().get(name)

    def list_users(self) -> list[UserRecord]:
        """Return every user, sorted by name."""
        return sorted(self.load().values(), key=lambda u: u.name)

    # -- writing -----------------------------------------------------------

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.data_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, UserRecord]]:
        """Hold the write lock and yield a fresh copy of the users; the copy is saved on exit.

        With a :attr:`mirror` (several gateways), the copy starts from the
        newest of the file and the mirror, and the result is published to the
        mirror (compare-and-set on its revision) before the file is written:
        a change another gateway published meanwhile makes this one fail
        (:class:`UsersBusy`) rather than undo it.
        """
        with self._file_lock():
            revision, users = self._read_document()
            expected: int | None = None
            if self.mirror is not None:
                remote = self.mirror.fetch()
                if remote is not None:
                    expected = remote[0]
                    if remote[0] >= revision:
                        revision, users = parse_document(remote[1], "the users mirror")
            users = dict(users)
            yield users
            text = document_text(revision + 1, users)
            if self.mirror is not None and not self.mirror.publish(expected, revision + 1, text):
                raise UsersBusy("the users were changed on another gateway at this moment: try again")
            self._write_text(text)

    def _write_text(self, text: str) -> None:
        write_durably(self.path, [text.encode()])
        self._cache_key = None  # our own write: re-read at the next look

    def sync(self) -> str | None:
        """Bring the users file and the :attr:`mirror` to the same revision; say what was done.

        Returns ``"pulled"`` (another gateway's newer users written here),
        ``"pushed"`` (this file is newer, e.g. changed by the CLI, or the
        mirror was empty), ``"conflict"`` (same revision, other users: the
        mirror's win, this file's change is lost), or ``None`` (in step).
        Raises :class:`UsersUnavailable` when the mirror cannot be reached.
        """
        if self.mirror is None:
            return None
        with self._file_lock():
            revision, users = self._read_document()
            remote = self.mirror.fetch()
            if remote is None or remote[0] < revision:
                pushed = self.mirror.publish(remote[0] if remote else None, revision, document_text(revision, users))
                return "pushed" if pushed else None
            remote_revision, remote_users = parse_document(remote[1], "the users mirror")
            if remote_revision == revision and remote_users == users:
                return None
            self._write_text(remote[1])
            return "conflict" if remote_revision == revision else "pulled"

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
            twin = clash(name, users)
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
        if self.mirror is not None:
            # A sign-in sees a change made on another gateway a moment ago; without the mirror, the
            # file as last synced decides (the session store, in the same Redis, is down too then).
            with contextlib.suppress(UsersUnavailable):
                self.sync()
        rec = self.get(name) if NAME_RE.fullmatch(name) else None
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
