"""Running jobs: the runner, the supervisor process, job logs in memory and on disk, and log
retention.

May import: ``engine_hub`` top-level modules and ``shared``; ``log_retention`` also the job service
and the store it sweeps for. Never ``engine_hub.http`` or ``engine_hub.cli``.
"""
