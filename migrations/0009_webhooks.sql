-- Webhooks: outgoing HTTP callbacks for call events, per owner. What a
-- webhook is told follows its owner's rights, like the owner's own call window.

CREATE TABLE webhooks (
    id                TEXT PRIMARY KEY,
    -- The employee who created it; NULL: created with the bootstrap admin token (an admin).
    -- An employee's webhooks go with them.
    owner_id          TEXT REFERENCES users(id) ON DELETE CASCADE,
    url               TEXT NOT NULL,
    events            TEXT NOT NULL,           -- JSON array: call.ringing | call.answered | call.ended
    secret            TEXT NOT NULL,           -- HMAC-SHA256 key of the signature; never returned (A4)
    created_at        BIGINT NOT NULL,
    last_delivery_at  BIGINT,                  -- last delivery the receiver answered 2xx
    last_error        TEXT,                    -- last delivery that failed for good, and why
    last_error_at     BIGINT
);

-- An agent's list of their own webhooks.
CREATE INDEX webhooks_owner ON webhooks(owner_id, id);
