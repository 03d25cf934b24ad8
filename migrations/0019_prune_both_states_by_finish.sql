-- Retention deletes the longest finished SUCCEEDED and CANCELLED jobs together.
--
-- Through jobs_finished_prunable (state, finished_at), 0013, the pruning sweep walked the
-- SUCCEEDED jobs oldest first and then the CANCELLED ones: a batch filled with SUCCEEDED
-- jobs went before CANCELLED jobs that had finished longer ago. Ordered by finished_at
-- alone, one index scan returns the jobs of both states oldest first and stops at the
-- first one still within retention; a sweep with nothing to delete is one probe (two
-- before). The old index, which no statement reads any more, goes.
CREATE INDEX jobs_prunable_by_finished_at
    ON jobs (finished_at) WHERE state IN ('SUCCEEDED', 'CANCELLED');
DROP INDEX jobs_finished_prunable;
