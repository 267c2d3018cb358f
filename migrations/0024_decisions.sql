-- The decision record of each call, e-mail and activity (JSON: identifiers tried,
-- candidates and why, rules applied, outcome). Rows older than this migration keep NULL.
ALTER TABLE calls ADD COLUMN decision TEXT;
ALTER TABLE emails ADD COLUMN decision TEXT;
ALTER TABLE activities ADD COLUMN decision TEXT;
