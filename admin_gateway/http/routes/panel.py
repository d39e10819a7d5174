"""The browser's rows of the gateway's route table: signing in and out, the panel's pages, its assets."""

from __future__ import annotations

from typing import Final

from admin_gateway.auth.csrf import FORM_FIELD
from admin_gateway.auth.csrf import HEADER as CSRF_HEADER
from admin_gateway.http.audit_page import audit_page
from admin_gateway.http.login import AFTER_LOGIN, login, login_page, logout
from admin_gateway.http.pages import approvals_page, index, job_page, jobs_page, logs_page
from admin_gateway.http.schemas import (
    AUDIT_FILTERS,
    BAD_FORM,
    PAGE_GUARDS,
    PANEL_JOB_PATH,
    PANEL_TAGS,
    RETRY_AFTER,
    SIGN_IN_TAGS,
    STATIC_MEDIA,
    TOO_LARGE,
    E,
    page,
    redirect,
)
from admin_gateway.http.static_files import asset
from shared.openapi import (
    FORM,
    HTML,
    JSON,
    ErrorCase,
    Operation,
    body,
    closed_object,
    errors,
    path,
    query,
    response,
)
from shared.routes import Access, Route, RouteTable

SIGN_IN: Final[RouteTable] = (
    Route(
        access=Access.PUBLIC,
        handler=login_page,
        operation=Operation(
            method="GET",
            path="/login",
            operation_id="loginForm",
            tags=SIGN_IN_TAGS,
            security=(),
            parameters=(query("next", {"type": "string"}, "A path of this site to land on after signing in."),),
            summary="The sign-in form (it carries a signed CSRF token in a hidden field).",
            responses={
                "200": page("The form; its token is bound to the gw_form cookie, nothing is stored on the server."),
                "303": redirect("Already signed in: to `next` or the panel", AFTER_LOGIN),
            },
        ),
    ),
    Route(
        access=Access.PUBLIC,
        handler=login,
        operation=Operation(
            method="POST",
            path="/login",
            operation_id="login",
            tags=SIGN_IN_TAGS,
            security=(),
            summary="Sign in. Browsers get pages; `Accept: application/json` alone gets JSON.",
            description="A wrong name and a wrong password get the same answer. Failed attempts are "
            "throttled per account and per client address. Success rotates the session.",
            request_body=body(
                closed_object(
                    {
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                        "next": {
                            "type": "string",
                            "description": "A path of this site to land on (only `/…`, not `//…`; else ignored).",
                        },
                        FORM_FIELD: {"type": "string", "description": f"Or the {CSRF_HEADER} header."},
                    }
                ),
                media=(FORM,),
            ),
            responses={
                "200": response(
                    "JSON clients: signed in.",
                    closed_object(
                        {
                            "user": {"type": "string"},
                            "role": {"type": "string", "enum": ["super_admin", "admin"]},
                            "csrfToken": {"type": "string"},
                            "mustChangePassword": {
                                "type": "boolean",
                                "description": "A one-time password: only POST /admin/password is open until it is "
                                "changed (the API answers 403 password_change_required).",
                            },
                        }
                    ),
                ),
                "303": redirect(
                    "Browsers: signed in, to `next`, the panel, or first /admin/password for a one-time password",
                    AFTER_LOGIN,
                ),
                **errors(
                    ErrorCase(
                        status=401,
                        code=E.UNAUTHORIZED,
                        when="wrong user name or password, or a disabled account",
                        media=(JSON, HTML),
                    ),
                    ErrorCase(
                        status=403,
                        code=E.CSRF,
                        when="missing or wrong CSRF token, or a foreign origin",
                        media=(JSON, HTML),
                    ),
                    ErrorCase(
                        status=429,
                        code=E.THROTTLED,
                        when="too many failed attempts (per address, per "
                        "account and address, per account or per device cookie), or every password-check "
                        "thread is busy",
                        headers=RETRY_AFTER,
                        media=(JSON, HTML),
                    ),
                    ErrorCase(
                        status=503,
                        code=E.JOURNAL_UNAVAILABLE,
                        when="the sign-in cannot be recorded in the audit trail, so no session is opened (fail closed)",
                        media=(JSON, HTML),
                    ),
                    BAD_FORM,
                    TOO_LARGE,
                ),
            },
        ),
    ),
    Route(
        access=Access.PUBLIC,
        handler=logout,
        operation=Operation(
            method="POST",
            path="/logout",
            operation_id="logout",
            tags=SIGN_IN_TAGS,
            security=(),
            summary="End the session on the server: a copied cookie is dead afterwards.",
            responses={
                "204": response("JSON clients: signed out."),
                "303": redirect("Browsers: signed out, to the sign-in form", "/login"),
                **errors(ErrorCase(status=403, code=E.CSRF, when="signed in, but the CSRF check failed"), BAD_FORM),
            },
        ),
    ),
)

PAGES: Final[RouteTable] = (
    Route(
        access=Access.PUBLIC,
        handler=index,
        operation=Operation(
            method="GET",
            path="/",
            operation_id="index",
            tags=PANEL_TAGS,
            security=(),
            summary="The panel starts at the job list.",
            responses={"303": redirect("Always", AFTER_LOGIN)},
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=jobs_page,
        operation=Operation(
            method="GET",
            path="/admin/engine/jobs",
            operation_id="jobsPage",
            tags=PANEL_TAGS,
            parameters=(
                query("status", {"type": "string"}, "Filter (ignored unless a status)."),
                query("type", {"type": "string"}, "Filter."),
                query("q", {"type": "string"}, "Name search (case-insensitive substring, done by the engine)."),
                query("before", {"type": "string"}, "Cursor."),
                query("limit", {"type": "string"}, "Page size (1 to 500; else 50)."),
            ),
            summary="The jobs table: RUN for READY jobs (super_admin, SAFE_MODE off), Cancel for RUNNING ones.",
            responses={"200": page("The table, or its outage/error banner."), **PAGE_GUARDS},
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=job_page,
        operation=Operation(
            method="GET",
            path="/admin/engine/jobs/{job_id}",
            operation_id="jobPage",
            tags=PANEL_TAGS,
            parameters=(PANEL_JOB_PATH,),
            summary="One job: fields, status history, audit records (both journals), live log.",
            responses={"200": page("The job."), "404": page("No such job."), **PAGE_GUARDS},
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=approvals_page,
        operation=Operation(
            method="GET",
            path="/admin/engine/approvals",
            operation_id="approvalsPage",
            tags=PANEL_TAGS,
            summary="The runs waiting for a second person's approval, with Approve and Reject (never on your own).",
            responses={"200": page("The page; its script lists the requests."), **PAGE_GUARDS},
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=logs_page,
        operation=Operation(
            method="GET",
            path="/admin/engine/logs",
            operation_id="logsPage",
            tags=PANEL_TAGS,
            parameters=(query("before", {"type": "string"}, "Cursor: an Older link's time (RFC 3339)."),),
            summary='The engine log, newest first, 50 entries a page with "Older" and "Newest" links.',
            responses={
                "200": page("The log, or its outage banner."),
                "400": page("A `before` that is not a time: the page with the error."),
                **PAGE_GUARDS,
            },
        ),
    ),
    Route(
        access=Access.SUPER_ADMIN,
        handler=audit_page,
        operation=Operation(
            method="GET",
            path="/admin/audit",
            operation_id="auditPage",
            tags=PANEL_TAGS,
            parameters=AUDIT_FILTERS,
            summary='The audit trail: both journals, newest first, with filters and an "Older" link.',
            responses={
                "200": page("The timeline (with a notice when the engine's records are unavailable)."),
                "400": page("A bad filter value: the page with the error."),
                **PAGE_GUARDS,
            },
        ),
    ),
)

ASSETS: Final[RouteTable] = (
    Route(
        access=Access.PUBLIC,
        handler=asset,
        operation=Operation(
            method="GET",
            path="/favicon.ico",
            operation_id="favicon",
            tags=PANEL_TAGS,
            security=(),
            summary="The icon browsers ask for by themselves.",
            responses={"200": response("The icon.", {"type": "string", "format": "binary"}, media="image/x-icon")},
        ),
    ),
    Route(
        access=Access.PUBLIC,
        handler=asset,
        name="static",
        pattern="/static/{path:.+}",
        operation=Operation(
            method="GET",
            path="/static/{path}",
            operation_id="static",
            tags=PANEL_TAGS,
            security=(),
            parameters=(path("path", {"type": "string"}, "A file under admin_gateway/static/."),),
            summary="The panel's stylesheet, scripts and icons (revalidated: `Cache-Control: no-cache`).",
            responses={
                "200": response("The file.", {"type": "string"}, media=STATIC_MEDIA),
                "206": response("A byte range of the file (`Range`).", {"type": "string"}, media=STATIC_MEDIA),
                "304": response("Not modified since `If-Modified-Since`."),
                "416": response("The `Range` is outside the file."),
                **errors(ErrorCase(status=404, code=E.NOT_FOUND, when="not a file of the panel")),
            },
        ),
    ),
)
