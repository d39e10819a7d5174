"""engine_hub: the Engine Jobs daemon (job store, manual runs, HTTP contract, CLI).

Importing this package has no side effects; ``engine_hub.http.app.create_app``
builds the web application and ``engine_hub.cli.main.main`` is the console entry.
"""
