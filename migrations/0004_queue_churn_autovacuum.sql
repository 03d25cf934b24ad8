-- The jobs table churns: every job is inserted, updated two or more times as it moves
-- through its states, and deleted by retention, so dead row versions pile up fast and
-- the row counts swing between empty and a large backlog within minutes. Postgres'
-- defaults wait for 20% of the table to be dead before vacuuming and 10% to change
-- before re-analyzing, which on a busy queue means bloated indexes and plans made for
-- the table's size of an hour ago. Vacuum and analyze after a fixed, small amount of
-- change instead, and let autovacuum work without its default throttling.
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.0,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);

ALTER TABLE dead_letters SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);
