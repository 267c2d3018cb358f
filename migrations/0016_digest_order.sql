-- Which digest algorithms an employee's phones are offered, most preferred first, written
-- like `sha256,md5`; NULL: the gateway's `--sip-digest`. For phones that read only the
-- first challenge. Portable SQL as in 0001 (runs unchanged on SQLite and PostgreSQL).
ALTER TABLE users ADD COLUMN sip_digest TEXT;
