-- Backend.AI alembic revision 81c264528f20 (add_max_session_lifetime): head of 22.03.
-- verify: SELECT count(*) = 1 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'keypair_resource_policies' AND column_name = 'max_session_lifetime' AND is_nullable = 'NO' AND column_default = '0'
ALTER TABLE keypair_resource_policies ADD COLUMN max_session_lifetime INTEGER DEFAULT 0 NOT NULL;
