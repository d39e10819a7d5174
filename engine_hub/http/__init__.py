"""The engine's HTTP surface: the app, its one route table, access by token and scope, the
handlers and the OpenAPI document.

May import: ``engine_hub.jobs``, ``engine_hub.store``, ``engine_hub.run``, ``engine_hub`` top-level
modules and ``shared``. Nothing else in the engine imports it (only ``engine_hub.cli`` starts the app).
"""
