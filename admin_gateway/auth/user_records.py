"""What a gateway user is: the stored record, the roles, and the rules for names and passwords.

:mod:`admin_gateway.auth.users` (the users file) re-exports all of it.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Iterable
from typing import Any, Final

import attrs

ROLE_SUPER_ADMIN: Final = "super_admin"
ROLE_ADMIN: Final = "admin"
ROLES: Final = (ROLE_SUPER_ADMIN, ROLE_ADMIN)

MIN_PASSWORD_LENGTH: Final = 12
#: Longer input is refused before hashing: nobody types that, and it bounds the work per attempt.
MAX_PASSWORD_LENGTH: Final = 1024
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


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


def clash(name: str, others: Iterable[str]) -> str | None:
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
    if not NAME_RE.fullmatch(name):
        raise UserError(
            "user name must be 1-64 characters of letters, digits and . _ @ -, starting with a letter or digit"
        )
    reserved = clash(name, RESERVED_NAMES)
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
