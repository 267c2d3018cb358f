-- Signing in to the web console: people's passwords and their sessions.
--
-- `password_hash` is an argon2id PHC string (salt and parameters inside); NULL: the person
-- cannot sign in (API tokens and SIP still work).
ALTER TABLE users ADD COLUMN password_hash TEXT;

-- One row per signed-in browser. Only the SHA-256 of the cookie's token is stored, so a
-- stolen database hands out no working sessions. A session ends 12 hours after
-- `last_seen_at` (refreshed at most once a minute) and at `expires_at` (30 days after
-- sign-in) at the latest; it goes with its user (cascade, SQLite enforces it with
-- `PRAGMA foreign_keys = ON`).
CREATE TABLE sessions (
    token_hash    TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    remote_addr   TEXT,                    -- the TCP peer at sign-in
    user_agent    TEXT                     -- at sign-in, shortened
);

-- Ending a person's sessions (password reset, role change).
CREATE INDEX sessions_user ON sessions(user_id);
-- The sweep of sessions past their end.
CREATE INDEX sessions_last_seen ON sessions(last_seen_at);
CREATE INDEX sessions_expires ON sessions(expires_at);
