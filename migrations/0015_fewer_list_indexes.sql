-- Job lists through two indexes instead of four.
--
-- Every job stored, claimed or settled writes an entry into each index of `jobs` (a move
-- between states is never a heap-only update, as `state` is indexed), so each index costs
-- every enqueue and every state change. Of the four newest-first list orders of 0001, the
-- two led by state serve every filter: a list filtered by state (with or without a queue)
-- walks its index as before, and a list without a state filter merges one walk per state
-- (adapters/postgres/job_store.py, find_statement). The unfiltered and per-queue orders go.
DROP INDEX jobs_newest_first;
DROP INDEX jobs_queue_newest_first;
