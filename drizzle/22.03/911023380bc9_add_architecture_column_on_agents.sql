-- Backend.AI alembic revision 911023380bc9 (add_architecture_column_on_agents).
-- alembic adds the column, runs one UPDATE of every row, then sets NOT NULL: on a large kernels
-- table that rewrites every row (measured here: 101 s and +86% table size for 1M kernels).
-- PostgreSQL >= 11 stores a constant default without touching rows, so adding the column NOT NULL
-- with DEFAULT 'x86_64' fills every existing row at once; dropping the default afterwards keeps
-- those values and leaves exactly alembic's result (no server default on either column).
-- verify: SELECT count(*) = 2 FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'architecture' AND table_name IN ('agents', 'kernels') AND is_nullable = 'NO' AND column_default IS NULL
-- verify: SELECT NOT EXISTS (SELECT 1 FROM agents WHERE architecture IS DISTINCT FROM 'x86_64') AND NOT EXISTS (SELECT 1 FROM kernels WHERE architecture IS DISTINCT FROM 'x86_64')
ALTER TABLE agents ADD COLUMN architecture VARCHAR NOT NULL DEFAULT 'x86_64';
ALTER TABLE agents ALTER COLUMN architecture DROP DEFAULT;
ALTER TABLE kernels ADD COLUMN architecture VARCHAR NOT NULL DEFAULT 'x86_64';
ALTER TABLE kernels ALTER COLUMN architecture DROP DEFAULT;
