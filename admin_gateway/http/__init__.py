"""The gateway's HTTP surface: the app, its one route table, the access rule, security headers,
static files, and the handlers of login, pages, the audit page and the admin API.

May import: ``admin_gateway.auth``, ``admin_gateway.audit``, ``admin_gateway`` top-level modules
and ``shared``. Nothing else in the gateway imports it (only ``admin_gateway.cli`` starts the app).
"""
