-- Backend.AI alembic revision d59ff89e7514 (remove_keypair_concurrency_used). The counts were
-- written to Redis (keypair.concurrency_used.{access_key}) and checked by the step before this one.
-- verify: SELECT count(*) = 0 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'keypairs' AND column_name = 'concurrency_used'
ALTER TABLE keypairs DROP COLUMN concurrency_used;
