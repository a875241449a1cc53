-- Backend.AI alembic revision 0f7a4b643940: merge of 7dd1d81c3204 and 911023380bc9 (no DDL). Head of 22.03.0a1.
SELECT 1;
