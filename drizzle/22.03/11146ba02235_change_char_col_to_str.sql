-- Backend.AI alembic revision 11146ba02235 (change_char_col_to_str): agents.architecture becomes
-- VARCHAR(32) and loses the blank padding a 22.03.0a1 CHAR(32) model could have left.
-- verify: SELECT format_type(atttypid, atttypmod) = 'character varying(32)' FROM pg_attribute WHERE attrelid = 'agents'::regclass AND attname = 'architecture'
ALTER TABLE agents ALTER COLUMN architecture TYPE VARCHAR(32);
UPDATE agents SET architecture = TRIM(architecture) WHERE architecture <> TRIM(architecture);
