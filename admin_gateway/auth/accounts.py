"""Administering accounts: what the Users page and the CLI may do to a user, and the rules they keep.

Every operation is one :meth:`UserStore.update` (under the users file's
lock), so the rules are checked against the users as they are at that
moment, not as a page saw them:

- **Somebody can still administer.** No change may leave the gateway without
  an active (not disabled) ``super_admin`` when it had one: removing,
  disabling or demoting the last one raises :class:`LastSuperAdmin`.
- **Sessions end with the change.** Disabling, demoting and resetting a
  password give the user a new credential generation, so every session they
  hold stops granting anything at its next request on every gateway that
  reads this users file; the caller also deletes those sessions at once
  (:meth:`admin_gateway.auth.sessions.SessionStore.end_user_sessions`).
- **A generated password is a one-time password.** Users added or reset here
  get one (:func:`~admin_gateway.auth.users.generate_password`), shown once,
  and must change it at their next sign-in (``must_change_password``).

Every function is synchronous and blocking (file I/O, argon2): call it in a thread.
"""

from __future__ import annotations

import attrs

from admin_gateway.auth.users import (
    ROLE_SUPER_ADMIN,
    NoSuchUser,
    UserError,
    UserRecord,
    UserStore,
    generate_password,
    validate_password,
    validate_role,
)
from shared.contract import format_time, utcnow


class LastSuperAdmin(UserError):
    """The change would leave no active super_admin."""


class WrongPassword(UserError):
    """The current password given for a password change is not the user's."""


def active_super_admins(users: dict[str, UserRecord]) -> int:
    """How many users may administer: role ``super_admin`` and not disabled."""
    return sum(1 for u in users.values() if u.role == ROLE_SUPER_ADMIN and not u.disabled)


def _keep_a_super_admin(before: int, users: dict[str, UserRecord], name: str) -> None:
    if before > 0 and active_super_admins(users) == 0:
        raise LastSuperAdmin(f"{name} is the last active super_admin: add or enable another one first")


def _existing(users: dict[str, UserRecord], name: str) -> UserRecord:
    rec = users.get(name)
    if rec is None:
        raise NoSuchUser(f"no user {name!r}")
    return rec


def add_user(store: UserStore, name: str, role: str) -> tuple[UserRecord, str]:
    """Create ``name`` with ``role`` and a generated one-time password; return the record and the password."""
    password = generate_password()
    return store.add(name, role, password, must_change=True), password


def set_role(store: UserStore, name: str, role: str) -> UserRecord:
    """Give ``name`` ``role``; a real change ends their sessions.

    Raises :class:`LastSuperAdmin`, :class:`NoSuchUser`.
    """
    validate_role(role)

    def change(users: dict[str, UserRecord]) -> UserRecord:
        rec = _existing(users, name)
        if rec.role == role:
            return rec
        before = active_super_admins(users)
        users[name] = rec = attrs.evolve(rec, role=role, generation=rec.generation + 1)
        _keep_a_super_admin(before, users, name)
        return rec

    return store.update(change)


def set_disabled(store: UserStore, name: str, disabled: bool) -> UserRecord:
    """Disable (ending their sessions) or enable ``name``. Raises :class:`LastSuperAdmin`, :class:`NoSuchUser`."""

    def change(users: dict[str, UserRecord]) -> UserRecord:
        rec = _existing(users, name)
        if rec.disabled == disabled:
            return rec
        before = active_super_admins(users)
        generation = rec.generation + 1 if disabled else rec.generation
        users[name] = rec = attrs.evolve(rec, disabled=disabled, generation=generation)
        _keep_a_super_admin(before, users, name)
        return rec

    return store.update(change)


def remove_user(store: UserStore, name: str) -> UserRecord:
    """Delete ``name`` and return what was removed. Raises :class:`LastSuperAdmin`, :class:`NoSuchUser`."""

    def change(users: dict[str, UserRecord]) -> UserRecord:
        rec = _existing(users, name)
        before = active_super_admins(users)
        del users[name]
        _keep_a_super_admin(before, users, name)
        return rec

    return store.update(change)


def reset_password(store: UserStore, name: str) -> str:
    """Give ``name`` a generated one-time password (their sessions end) and return it, to be shown once."""
    password = generate_password()
    store.set_password(name, password, must_change=True)
    return password


def change_own_password(store: UserStore, name: str, current: str, new: str) -> UserRecord:
    """Replace ``name``'s password after checking ``current``; returns the record with its new generation.

    Raises :class:`WrongPassword` when ``current`` is not theirs, and
    :class:`UserError` when ``new`` fails the password rules or equals
    ``current`` (a one-time password must really be replaced). Every other
    session of theirs ends (new generation); the caller moves the session it
    was asked from to the new generation.
    """
    if store.verify(name, current) is None:
        raise WrongPassword("the current password is wrong")
    validate_password(new)
    if new == current:
        raise UserError("the new password must differ from the current one")
    return store.set_password(name, new, must_change=False)


def record_sign_in(store: UserStore, name: str) -> None:
    """Note the time of ``name``'s successful sign-in (shown on the Users page); a removed user is ignored."""
    now = format_time(utcnow())

    def change(users: dict[str, UserRecord]) -> None:
        rec = users.get(name)
        if rec is not None:
            users[name] = attrs.evolve(rec, last_sign_in_at=now)

    store.update(change)
