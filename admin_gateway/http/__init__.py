"""The gateway's HTTP surface: the app, its one route table, the access rule, security headers, the peer, and the handlers of login, pages, the audit page and the admin API.

May import: ``admin_gateway.auth.guards``, ``admin_gateway.audit.trail``, ``admin_gateway`` top-level modules and ``shared``. Nothing below imports it.
"""
