-- Backend.AI alembic revision 7dd1d81c3204 (add_vfolder_mounts_to_kernels): json, not jsonb, as alembic made it.
-- verify: SELECT count(*) = 1 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'kernels' AND column_name = 'vfolder_mounts' AND data_type = 'json'
-- verify: SELECT to_regclass('public.ix_keypairs_resource_policy') IS NOT NULL
ALTER TABLE kernels ADD COLUMN vfolder_mounts JSON;
CREATE INDEX ix_keypairs_resource_policy ON keypairs USING btree (resource_policy);
