-- Job indexes that cost every insert less.
--
-- Every job stored writes an entry into each index whose predicate it meets, and those
-- entries are most of a batch INSERT's time (docs/performance.md, "The transactional
-- enqueue").
--
-- The list indexes in ascending order. Declared newest first (0001), a batch's jobs, which
-- share one created_at and carry ids that grow in order, each went in front of the one
-- stored before it, and a full page split in half: the indexes grew to about twice the
-- pages their entries need (1,089 against 606 pages of jobs_state_newest_first for 100,000
-- jobs stored 1,000 at a time). In ascending order each entry follows the last one, and
-- pages split where the entries arrive stay full. A B-tree is walked either way: the lists read these backward
-- (every key of their ORDER BY descending, adapters/postgres/job_lists.py).
--
-- Two partial indexes of 0001 no statement reads any more: the never-published sweep walks
-- the unpublished jobs by priority (jobs_pending_unpublished_by_priority_due, 0010) and the
-- stale-hint sweep each queue's claim order (jobs_pending_by_queue_priority_due, 0010);
-- neither plans either index, and each cost an entry per job (a due job enqueued through
-- the API enters the second, one enqueued in an application's transaction the first).
CREATE INDEX jobs_state_created ON jobs (state, created_at, id);
CREATE INDEX jobs_queue_state_created ON jobs (queue, state, created_at, id);
DROP INDEX jobs_state_newest_first;
DROP INDEX jobs_queue_state_newest_first;
DROP INDEX jobs_pending_unpublished_due;
DROP INDEX jobs_pending_published_at;
