-- Several gateway processes ("nodes") on one database: who is running, and which node
-- owns each piece of work that must run exactly once (a mailbox's poller, a carrier
-- registration). Times are milliseconds since the epoch, as elsewhere.

-- One row per process start (a restarted process is a new node). `last_seen` is its
-- heartbeat; a node not seen for a while is lost.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    sip TEXT NOT NULL,
    http TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

-- `resource` is `mailbox:<id>` or `trunk:<id>`; the holder must renew before
-- `expires_at`, after which any node may take it.
CREATE TABLE leases (
    resource TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX leases_node ON leases(node_id);
