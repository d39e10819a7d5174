"""Where jobs are kept: the embedded store (journal-backed, in memory), its entries, packing,
snapshots and page cache. A second store implementation goes here beside ``embedded``: the
PostgreSQL store's schema (``schema.py``, ``migrations/``) is here already; its connection
helpers are :mod:`shared.pg` (the gateway's audit store uses them too).

May import: ``engine_hub`` top-level modules and ``shared``. Never ``engine_hub.http``,
``engine_hub.jobs``, ``engine_hub.run`` or ``engine_hub.cli``.
"""
