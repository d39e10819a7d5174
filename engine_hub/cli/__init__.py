"""The ``engine-hub`` command: ``serve``, ``jobs …`` over the HTTP API (with its small client) and
``audit …``.

May import anything in ``engine_hub`` and ``shared``. Nothing imports it but
``engine_hub.__main__``.
"""
