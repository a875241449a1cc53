-- Backend.AI alembic revision 60a1effa77d2 (add_coordinator_address_column_on_): head of 21.09.3+.
-- verify: SELECT count(*) = 1 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'scaling_groups' AND column_name = 'wsproxy_addr'
ALTER TABLE scaling_groups ADD COLUMN wsproxy_addr VARCHAR(1024);
