-- Backend.AI alembic revision a7ca9f175d5f: merge of d59ff89e7514 and 11146ba02235 (no DDL).
SELECT 1;
