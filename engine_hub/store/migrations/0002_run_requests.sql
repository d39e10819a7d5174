-- Migration 0002: run requests, the two-person rule of issue 15 (engine_hub/store/requests.py).
--
-- A job of a type that needs approval is started by the approval that completes its run request;
-- the request (open, then approved, rejected, withdrawn, expired or superseded) is the job's wire
-- field "runRequest", kept here as JSON and changed only under the row's lock (SELECT ... FOR UPDATE
-- in the change's transaction), so two nodes never both count the same approval.

ALTER TABLE jobs ADD COLUMN run_request jsonb CHECK (run_request IS NULL OR jsonb_typeof(run_request) = 'object');
COMMENT ON COLUMN jobs.run_request IS 'Wire "runRequest": the job''s latest run request {id, by, reason, at, expiresAt, planSha256, required, approvals, state, closedAt, closedBy, closeReason}, or NULL.';

-- The expiry sweep: READY jobs whose request is still open.
CREATE INDEX jobs_open_requests ON jobs ((run_request->>'expiresAt')) WHERE run_request->>'state' = 'open';
COMMENT ON INDEX jobs_open_requests IS 'The run request expiry sweep: open requests by expiry.';
