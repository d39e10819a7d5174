"""The engine's HTTP surface: the app, its one route table, access by token and scope, handlers, the OpenAPI document and metrics.

May import: ``engine_hub.jobs``, ``engine_hub.store.embedded``, ``engine_hub.run``, ``engine_hub`` top-level modules and ``shared``. Nothing below imports it.
"""
