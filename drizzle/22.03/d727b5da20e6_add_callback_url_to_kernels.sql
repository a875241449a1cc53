-- Backend.AI alembic revision d727b5da20e6 (add_callback_url_to_kernels).
-- verify: SELECT count(*) = 1 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'kernels' AND column_name = 'callback_url' AND data_type = 'text'
ALTER TABLE kernels ADD COLUMN callback_url TEXT;
