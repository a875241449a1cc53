-- Backend.AI alembic revision 8679d0a7e22b (add_scheduled_to_kernelstatus), for 21.03.0-21.03.2 databases.
-- The enum gains SCHEDULED the way alembic does it: a new type, every row cast through text,
-- the old type dropped; the partial unique index moves from session_id to session_name.
-- verify: SELECT 'SCHEDULED' = ANY(enum_range(NULL::kernelstatus)::text[])
-- verify: SELECT to_regtype('kernelstatus_old') IS NULL
-- verify: SELECT indexdef LIKE '%(access_key, session_name)%' FROM pg_indexes WHERE indexname = 'ix_kernels_unique_sess_token'
DROP INDEX IF EXISTS ix_kernels_unique_sess_token;
ALTER TYPE kernelstatus RENAME TO kernelstatus_old;
CREATE TYPE kernelstatus AS ENUM ('PENDING', 'SCHEDULED', 'PREPARING', 'BUILDING', 'PULLING', 'RUNNING', 'RESTARTING', 'RESIZING', 'SUSPENDED', 'TERMINATING', 'TERMINATED', 'ERROR', 'CANCELLED');
ALTER TABLE kernels
  ALTER COLUMN status DROP DEFAULT,
  ALTER COLUMN status TYPE kernelstatus USING status::text::kernelstatus,
  ALTER COLUMN status SET DEFAULT 'PENDING'::kernelstatus;
DROP TYPE kernelstatus_old;
CREATE UNIQUE INDEX ix_kernels_unique_sess_token ON kernels USING btree (access_key, session_name)
  WHERE ((status <> ALL (ARRAY['TERMINATED'::kernelstatus, 'CANCELLED'::kernelstatus])) AND ((cluster_role)::text = 'main'::text));
