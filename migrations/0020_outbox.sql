-- The webhook outbox: one row per delivery owed, written when the call update is
-- accepted and the webhook's owner may see it, deleted once it has been sent (or has
-- failed for good). A row is claimed by one node at a time until `claimed_until`; a row
-- whose claim has run out (its node died) is claimed again by any node.

CREATE TABLE webhook_outbox (
    id             TEXT PRIMARY KEY,      -- UUIDv7: the order events were accepted in
    webhook_id     TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event          TEXT NOT NULL,         -- call.ringing | call.answered | call.ended
    body           TEXT NOT NULL,         -- the signed JSON, as sent
    created_at     BIGINT NOT NULL,
    claimed_by     TEXT,                  -- the node sending it
    claimed_until  BIGINT
);

CREATE INDEX webhook_outbox_webhook ON webhook_outbox(webhook_id);
