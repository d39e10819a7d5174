-- Migration 0003: issue 16. A job's wire JSON gains "outcome" (derived from status and error:
-- shared/contract.py outcome_of), "copyOf" and "copies" ("Run again": POST /api/jobs/{id}/copy makes
-- a new READY job from a finished one and links both ways, in one transaction).

ALTER TABLE jobs ADD COLUMN copy_of uuid REFERENCES jobs (id);
COMMENT ON COLUMN jobs.copy_of IS 'Wire "copyOf": the job this one was made from by Run again, or NULL.';
ALTER TABLE jobs ADD COLUMN copies jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(copies) = 'array');
COMMENT ON COLUMN jobs.copies IS 'Wire "copies": ids of the jobs made from this one by Run again, oldest first.';

-- Rows written before: their stored JSON (jobs.wire, runRequest last) gets the three fields last, as
-- pg_rows.wire_from_row builds them. The CASE is outcome_of as of this migration (frozen here: a later
-- change of the rule needs a migration of its own); tests/integration/engine/test_pg_schema.py checks
-- that a migrated row serves the same bytes as one the engine rebuilds.
UPDATE jobs SET wire = left(wire, -1) || ',"outcome":' || CASE
        WHEN status = 'DONE' THEN '"succeeded"'
        WHEN status <> 'FAILED' THEN 'null'
        WHEN error LIKE 'interrupted: %' OR error = 'cancelled by engine shutdown' THEN '"interrupted"'
        WHEN error LIKE 'cancelled by %' THEN '"cancelled"'
        WHEN error LIKE 'timed out after %' THEN '"timed_out"'
        ELSE '"failed"'
    END || ',"copyOf":null,"copies":[]}'
    WHERE wire IS NOT NULL;
