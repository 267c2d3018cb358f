-- SIP registrations: the location service (RFC 3261 §10) and outbound carrier
-- registrations. Bindings live in the database so a restart does not forget them and
-- several gateway processes sharing PostgreSQL can route to any registered agent.

CREATE TABLE registrations (
    aor          TEXT NOT NULL,            -- address of record: an extension, or a trunk id
    owner_kind   TEXT NOT NULL,            -- user | trunk
    owner_id     TEXT NOT NULL,
    contact      TEXT NOT NULL,            -- Contact URI as registered
    expires_at   BIGINT NOT NULL,          -- UTC ms
    call_id      TEXT NOT NULL,
    cseq         BIGINT NOT NULL,
    q            TEXT,                     -- Contact q-value as written
    instance     TEXT,                     -- +sip.instance (RFC 5626)
    user_agent   TEXT,
    transport    TEXT NOT NULL,            -- udp | tcp
    source       TEXT NOT NULL,            -- ip:port the REGISTER came from (NAT)
    node         TEXT,                     -- the process holding its TCP connection
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (aor, contact)
);
CREATE INDEX registrations_owner ON registrations(owner_kind, owner_id);
CREATE INDEX registrations_expires ON registrations(expires_at);

-- State of our REGISTER to each carrier trunk with register = 1.
CREATE TABLE trunk_registrations (
    trunk_id          TEXT PRIMARY KEY REFERENCES trunks(id) ON DELETE CASCADE,
    state             TEXT NOT NULL,       -- registering | registered | failed | unregistered
    registered_until  BIGINT,
    last_error        TEXT,
    failures          BIGINT NOT NULL,
    next_attempt_at   BIGINT,
    updated_at        BIGINT NOT NULL
);
