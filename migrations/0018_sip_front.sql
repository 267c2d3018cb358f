-- Several nodes behind one SIP proxy. Portable SQL as in 0001 (runs unchanged on SQLite
-- and PostgreSQL).

-- The Path a REGISTER carried (RFC 3327), as sent: requests to the binding carry it as
-- their Route, so they go back through the proxy that saw the phone. NULL: no Path.
ALTER TABLE registrations ADD COLUMN path TEXT;

-- Secrets every node sharing the database must agree on, made once by whichever node
-- starts first: `digest_nonce_key` (hex) signs digest nonces, so a phone challenged by
-- one node may answer to another.
CREATE TABLE cluster_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
