"""engine_hub: the Engine Jobs daemon (job store, manual runs, HTTP contract, CLI).

Subpackages by role: ``http`` (the app, its route table, access, handlers,
OpenAPI), ``jobs`` (the job service, the type catalog, params, demo types),
``store`` (where jobs are kept), ``run`` (job processes and their logs) and
``cli``. Top-level modules (``settings``, ``errors``, ``metrics``) are used by
all of them.

May import: itself and ``shared``; never ``admin_gateway``. Importing it has
no side effects: ``engine_hub.http.app.create_app`` builds the web application
and ``engine_hub.cli.main.main`` is the console entry.
"""
