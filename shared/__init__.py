"""Code both Engine Jobs processes share: the wire contract, logging, HTTP plumbing and the journal.

Top level: ``contract`` (status names, JSON shapes, error codes, limits),
``log``, ``web`` (the request wrapper, route registration), ``routes`` (route
tables and access rules), ``openapi``, ``server`` and ``connection_limits``
(how a process listens), ``text``, ``torn`` and ``tokens`` (the one
token-file reader). ``journal`` holds the hash-chained journals.

May import: itself only; never ``engine_hub`` or ``admin_gateway``.
"""
