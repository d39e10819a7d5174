"""The read side of the embedded job store: its indexes and the queries over them.

:class:`StoreViews` holds what :class:`engine_hub.store.embedded.JobStore`
keeps per job (the id map, the ordered indexes, the legacy views) and
answers every read from it; the store's one mutation path lives in
:mod:`engine_hub.store.embedded`, which subclasses it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from engine_hub.store.entry import Index, JobEntry
from engine_hub.store.legacy_views import result_of
from shared.contract import JobStatus

#: How many legacy EngineLog entries are kept (a ring buffer, as in the original).
ENGINE_LOG_SIZE: Final = 500

#: How many legacy JobResults are kept: the most the results route returns.
RESULTS_SIZE: Final = 1000


class StoreViews:
    """The jobs by id, their indexes (all, by status, by type, by both) and the legacy views, with the reads.

    ``hot_jobs`` is the size of the hot window (jobs never packed); at least 1.
    """

    def __init__(self, *, hot_jobs: int) -> None:
        if hot_jobs < 1:
            raise ValueError("hot_jobs must be at least 1")
        self._hot_jobs = hot_jobs
        self._entries: dict[str, JobEntry] = {}
        self._all = Index()
        self._by_status: dict[JobStatus, Index] = {s: Index() for s in JobStatus}
        self._by_type: dict[str, Index] = {}
        self._by_status_type: dict[tuple[JobStatus, str], Index] = {}
        self._engine_logs: deque[dict[str, Any]] = deque(maxlen=ENGINE_LOG_SIZE)
        self._results: deque[str] = deque(maxlen=RESULTS_SIZE)

    def _hot_from(self) -> int:
        """The seq from which on jobs are in the hot window (never packed); 0 while all are."""
        entries, hot = self._all.entries, self._hot_jobs
        return entries[-hot].seq if len(entries) >= hot else 0

    def get(self, job_id: str) -> JobEntry | None:
        """Return the entry of a job, or ``None`` for an unknown id."""
        return self._entries.get(job_id)

    def __len__(self) -> int:
        return len(self._entries)

    def has_type(self, type_name: str) -> bool:
        """Whether any job of this type was ever created."""
        return type_name in self._by_type

    def count(self, status: JobStatus, type_name: str | None = None) -> int:
        """Return how many jobs have ``status`` (of ``type_name`` when given), in O(1)."""
        if type_name is None:
            return len(self._by_status[status])
        index = self._by_status_type.get((status, type_name))
        return 0 if index is None else len(index)

    def running_job_ids(self) -> list[str]:
        """Return the ids of every RUNNING job, oldest first."""
        return [entry.id for entry in self._by_status[JobStatus.RUNNING].entries]

    def page(
        self,
        *,
        limit: int,
        status: JobStatus | None = None,
        type_name: str | None = None,
        before: JobEntry | None = None,
        q: str | None = None,
    ) -> tuple[list[bytes], JobEntry | None]:
        """Return one page of encoded jobs, newest first, and the cursor of the next page.

        ``before`` is the entry of the cursor job: only jobs created before it
        are returned, whether or not it matches the filter itself. The second
        value is the last entry of the page when older matches exist, else
        ``None``. Costs O(log n + limit).

        ``q`` keeps only jobs whose casefolded name contains ``q`` casefolded.
        No index can answer a substring, so this walks the filter's index from
        the cursor down until ``limit`` + 1 matches are found: O(log n + the
        jobs walked), all of the filter's older jobs when few match (each a
        string test on the entry's :attr:`JobEntry.name_key`, no JSON read;
        docs/performance.md has the figure per million jobs).
        """
        index: Index | None
        if status is not None and type_name is not None:
            index = self._by_status_type.get((status, type_name))
        elif status is not None:
            index = self._by_status[status]
        elif type_name is not None:
            index = self._by_type.get(type_name)
        else:
            index = self._all
        if index is None:
            return [], None
        if q is not None:
            return index.search(q.casefold(), limit, None if before is None else before.seq)
        return index.page(limit, None if before is None else before.seq, self._hot_from())

    def engine_logs(self, limit: int) -> list[dict[str, Any]]:
        """Return the newest ``limit`` legacy EngineLog entries, oldest first."""
        size = len(self._engine_logs)
        return [self._engine_logs[i] for i in range(max(0, size - limit), size)]

    def results(self, limit: int) -> list[dict[str, Any]]:
        """Return the newest ``limit`` (at most :data:`RESULTS_SIZE`) legacy JobResults, oldest first.

        Built from the finished jobs themselves (JobResult ``createdAt`` is
        the job's ``endedAt``), so nothing but the job id is kept per result.
        """
        size = len(self._results)
        return [result_of(self._entries[self._results[i]].wire()) for i in range(max(0, size - limit), size)]
