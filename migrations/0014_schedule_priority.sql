-- Priorities of periodic jobs.
--
-- schedules.priority: the priority (0 claimed first, 9 last) of every job a tick of the
--                     schedule makes; default 5, the priority of a job that names none.
--
-- A constant default: adding the column rewrites nothing, and every existing schedule keeps
-- making the jobs it made before.
ALTER TABLE schedules ADD COLUMN priority smallint NOT NULL DEFAULT 5;

ALTER TABLE schedules
    ADD CONSTRAINT schedules_priority_range CHECK (priority BETWEEN 0 AND 9);
