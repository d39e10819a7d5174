"""Record chains for the store's unit tests: valid journal records built the way a journal would."""

from __future__ import annotations

from typing import Any

from shared.contract import HistoryEntry, Job, JobStatus, new_job_id, utcnow
from shared.journal.chain import GENESIS, Record, make_record


class Chain:
    """Builds a valid record chain the way a journal would."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def add(self, action: str, job_id: str | None, data: dict[str, Any] | None = None, actor: str = "admin") -> Record:
        prev = self.records[-1].hash if self.records else GENESIS
        rec = make_record(
            seq=len(self.records) + 1,
            prev=prev,
            action=action,
            actor=actor,
            source="127.0.0.1",
            job_id=job_id,
            data=data or {},
        )
        self.records.append(rec)
        return rec

    def created(self, type_name: str = "demo.echo", **job: Any) -> Record:
        now = utcnow()
        new = Job(
            id=new_job_id(),
            type=type_name,
            name=type_name,
            created_at=now,
            created_by="admin",
            history=(HistoryEntry(status=JobStatus.READY, at=now, by="admin"),),
            **job,
        )
        return self.add("job_created", new.id, new.to_json())
