"""The account rows of the gateway's route table: the Change password page, the Users page and its JSON API."""

from __future__ import annotations

from typing import Any, Final

from admin_gateway.auth.csrf import FORM_FIELD
from admin_gateway.auth.users import MAX_PASSWORD_LENGTH, ROLES
from admin_gateway.http.schemas import (
    API_AUTH,
    API_TAGS,
    AUDIT_DOWN,
    BAD_FIELD,
    BAD_FORM,
    BAD_JSON,
    CSRF,
    PAGE_GUARDS,
    PANEL_TAGS,
    SESSION,
    SESSION_CSRF,
    TOO_LARGE,
    UNKNOWN_FIELD,
    E,
    page,
    redirect,
)
from admin_gateway.http.users_api import (
    add_user,
    change_role,
    disable_user,
    enable_user,
    list_users,
    remove_user,
    reset_password,
)
from admin_gateway.http.users_pages import change_password, password_page, users_page
from shared.openapi import FORM, HTML, ErrorCase, Operation, body, closed_object, errors, path, query, response
from shared.routes import Access, Route, RouteTable
from shared.web import Handler

_NAME = path("name", {"type": "string"}, "The user's name.")
_NEXT = {"type": "string", "maxLength": 2048, "description": "A path of this site to go to afterwards (else ignored)."}
_ROLE = {"type": "string", "enum": list(ROLES)}
_USER = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "name",
        "role",
        "disabled",
        "mustChangePassword",
        "createdAt",
        "passwordChangedAt",
        "lastSignInAt",
        "sessions",
    ],
    "properties": {
        "name": {"type": "string"},
        "role": _ROLE,
        "disabled": {"type": "boolean"},
        "mustChangePassword": {"type": "boolean", "description": "Signed in with a one-time password not yet changed."},
        "createdAt": {"type": ["string", "null"]},
        "passwordChangedAt": {"type": ["string", "null"]},
        "lastSignInAt": {"type": ["string", "null"]},
        "sessions": {"type": "integer", "minimum": 0, "description": "Live sessions (all gateways' with Redis)."},
    },
}
_ENDED = {"type": "integer", "minimum": 0, "description": "How many of the user's sessions were ended."}
_PASSWORD = {"type": "string", "description": "The one-time password: shown once, to be changed at first sign-in."}
_NO_USER = ErrorCase(status=404, code=E.NOT_FOUND, when="no user has this name")
_LAST = ErrorCase(
    status=409, code=E.LAST_SUPER_ADMIN, when="it would leave no active super_admin (remove, disable, demote)"
)
_YOURSELF = ErrorCase(status=400, code=E.INVALID_FIELD, when="a bad field value, or the change is of your own account")
_SHARED_DOWN = ErrorCase(
    status=503,
    code=E.STORE_UNAVAILABLE,
    when="with Redis sessions: the users shared through Redis cannot be read or written, or another gateway "
    "changed them at this very moment (nothing was changed; try again)",
)
_CHANGE: Final = (*API_AUTH, CSRF, BAD_JSON, BAD_FORM, UNKNOWN_FIELD, TOO_LARGE, AUDIT_DOWN, _SHARED_DOWN)


def _user_change(verb: str, handler: Handler, operation_id: str, summary: str, answer: dict[str, Any]) -> Route:
    """The row of ``POST /api/admin/users/{name}/<verb>`` (super_admin, CSRF, no body)."""
    return Route(
        access=Access.SUPER_ADMIN,
        handler=handler,
        operation=Operation(
            method="POST",
            path=f"/api/admin/users/{{name}}/{verb}",
            operation_id=operation_id,
            tags=API_TAGS,
            parameters=(_NAME,),
            security=(SESSION_CSRF,),
            summary=summary,
            request_body=body(closed_object({}), required=False, media=("application/json", FORM)),
            responses={"200": response("Done.", closed_object(answer)), **errors(*_CHANGE, _YOURSELF, _NO_USER, _LAST)},
        ),
    )


USERS: Final[RouteTable] = (
    Route(
        access=Access.SESSION,
        handler=password_page,
        operation=Operation(
            method="GET",
            path="/admin/password",
            operation_id="passwordPage",
            tags=PANEL_TAGS,
            security=(SESSION,),
            parameters=(query("next", {"type": "string"}, "Where to go once changed (a path of this site)."),),
            summary="Change password (every signed-in user; the only page open while a one-time password "
            "must be changed).",
            responses={"200": page("The form."), "303": redirect("Not signed in: to the sign-in form", "/login")},
        ),
    ),
    Route(
        access=Access.SESSION,
        handler=change_password,
        operation=Operation(
            method="POST",
            path="/admin/password",
            operation_id="changePassword",
            tags=PANEL_TAGS,
            security=(SESSION_CSRF,),
            summary="Change your password: every other session of yours ends; this one stays signed in.",
            request_body=body(
                closed_object(
                    {
                        "current_password": {"type": "string", "maxLength": MAX_PASSWORD_LENGTH},
                        "new_password": {"type": "string", "maxLength": MAX_PASSWORD_LENGTH},
                        "new_password_again": {"type": "string", "maxLength": MAX_PASSWORD_LENGTH},
                        "next": _NEXT,
                        FORM_FIELD: {"type": "string"},
                    },
                    required=("current_password", "new_password", "new_password_again", FORM_FIELD),
                ),
                media=(FORM,),
            ),
            responses={
                "303": redirect("Changed (or not signed in: to the sign-in form)", "next, the panel or /login"),
                **errors(
                    BAD_FORM,
                    TOO_LARGE,
                    *(
                        ErrorCase(status=status, code=code, when=when, media=(HTML,))
                        for status, code, when in (
                            (400, E.INVALID_FIELD, "the form again: the new passwords differ or break the rules"),
                            (401, E.UNAUTHORIZED, "the form again: the current password is wrong"),
                            (403, E.CSRF, "the form again: the CSRF check failed"),
                            (429, E.THROTTLED, "the form again: too many wrong passwords, or the checks are busy"),
                            (
                                503,
                                E.STORE_UNAVAILABLE,
                                "the form again: the users shared through Redis are unreachable",
                            ),
                        )
                    ),
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=users_page,
        operation=Operation(
            method="GET",
            path="/admin/users",
            operation_id="usersPage",
            tags=PANEL_TAGS,
            summary="Users: role, last sign-in, live sessions; add, change role, disable, remove, reset password.",
            responses={"200": page("The page; its script lists the users."), **PAGE_GUARDS},
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=list_users,
        operation=Operation(
            method="GET",
            path="/api/admin/users",
            operation_id="listUsers",
            tags=API_TAGS,
            summary="Every user with role, state, last sign-in and live sessions; `you` is the caller.",
            responses={
                "200": response(
                    "The users, by name.",
                    closed_object(
                        {"users": {"type": "array", "items": _USER}, "you": {"type": "string"}},
                        required=("users", "you"),
                    ),
                ),
                **errors(*API_AUTH),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=add_user,
        operation=Operation(
            method="POST",
            path="/api/admin/users",
            operation_id="addUser",
            tags=API_TAGS,
            security=(SESSION_CSRF,),
            summary="Add a user with a role and a generated one-time password (in the answer, shown once).",
            request_body=body(
                closed_object({"name": {"type": "string", "minLength": 1}, "role": _ROLE}, required=("name", "role")),
                media=("application/json", FORM),
                example={"name": "carol", "role": "admin"},
            ),
            responses={
                "201": response(
                    "Added.", closed_object({"user": _USER, "password": _PASSWORD}, required=("user", "password"))
                ),
                **errors(
                    *_CHANGE,
                    BAD_FIELD,
                    ErrorCase(status=409, code=E.USER_EXISTS, when="the name, or one too like it, is taken"),
                ),
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=change_role,
        operation=Operation(
            method="POST",
            path="/api/admin/users/{name}/role",
            operation_id="changeUserRole",
            tags=API_TAGS,
            parameters=(_NAME,),
            security=(SESSION_CSRF,),
            summary="Change a user's role; a change ends their sessions.",
            request_body=body(
                closed_object({"role": _ROLE}, required=("role",)),
                media=("application/json", FORM),
                example={"role": "admin"},
            ),
            responses={
                "200": response("Changed.", closed_object({"user": _USER}, required=("user",))),
                **errors(*_CHANGE, _YOURSELF, _NO_USER, _LAST),
            },
        ),
    ),
    _user_change(
        "disable",
        disable_user,
        "disableUser",
        "Disable a user: they cannot sign in, their sessions end at once.",
        {"user": _USER, "sessionsEnded": _ENDED},
    ),
    _user_change(
        "enable", enable_user, "enableUser", "Enable a disabled user again.", {"user": _USER, "sessionsEnded": _ENDED}
    ),
    _user_change(
        "remove",
        remove_user,
        "removeUser",
        "Remove a user: their sessions end at once.",
        {"name": {"type": "string"}, "sessionsEnded": _ENDED},
    ),
    _user_change(
        "reset-password",
        reset_password,
        "resetUserPassword",
        "Give a user a new one-time password (in the answer, shown once); their sessions end at once.",
        {"user": _USER, "password": _PASSWORD, "sessionsEnded": _ENDED},
    ),
)
