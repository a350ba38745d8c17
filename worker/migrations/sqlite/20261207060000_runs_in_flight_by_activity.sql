-- Postgres only: its runs in flight are listed per activity in a table of
-- their own so that a run's finish is a HOT update there (see the Postgres
-- twin). SQLite has no HOT updates and one writer; its partial indexes on
-- state stay. This file keeps the two stores' migrations numbered in step.
select 1;
