"""The gateway's audit trail (one seam for every security event, on its own journal) and the timeline over both processes' journals.

May import: ``admin_gateway`` top-level modules and ``shared``. Never ``admin_gateway.http`` or ``admin_gateway.auth.guards``.
"""
