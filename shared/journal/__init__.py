"""Hash-chained, append-only journals: the chain and its records, the on-disk format, the durable file
journal and its writer thread, snapshots, and the offline tools and ``audit`` commands.

May import: ``shared`` top-level modules. Never ``engine_hub`` or ``admin_gateway``.
"""
