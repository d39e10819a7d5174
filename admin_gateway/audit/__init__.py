"""The gateway's audit trail (one seam for every security event, on its own journal) and the
timeline that reads both processes' journals.

May import: ``admin_gateway`` top-level modules (``settings``, ``errors``, ``peer``,
``engine_client``) and ``shared``. Never ``admin_gateway.http`` or ``admin_gateway.auth``: sign-in
code writes to the trail, so the trail cannot depend on it.
"""
