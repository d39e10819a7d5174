"""What a job is and what may be done with it: the job service (create, run at most once, cancel),
the type catalog model, params, the demo types and the catalog file loader.

May import: ``engine_hub.store``, ``engine_hub.run``, ``engine_hub`` top-level modules and
``shared``. Never ``engine_hub.http`` or ``engine_hub.cli``.
"""
