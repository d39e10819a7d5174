"""Who is asking and may they: sessions, users and passwords, CSRF, login throttling, device
cookies and the signatures over them.

May import: ``admin_gateway.audit``, ``admin_gateway`` top-level modules and ``shared``. Never
``admin_gateway.http``.
"""
