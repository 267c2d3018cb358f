-- The audit log. One row per change the API allowed and carried out (a mutating
-- request answered 2xx): who, what, on which object, from which address.
--
-- `fields` holds the names of the request body's top-level fields as a JSON array, never
-- their values: bodies carry SIP and IMAP passwords and webhook secrets.
CREATE TABLE audit_log (
    id           TEXT PRIMARY KEY,        -- UUID v7: time-ordered, so it is the list's cursor
    at           BIGINT NOT NULL,         -- UTC milliseconds
    actor        TEXT NOT NULL,           -- user:<id> | bootstrap | trunk:<id>
    action       TEXT NOT NULL,           -- method and route template: PATCH /api/v1/contacts/{id}
    object       TEXT,                    -- contact:<id>, number:<id> … or the request path
    fields       TEXT NOT NULL,           -- JSON array of field names
    remote_addr  TEXT,                    -- the TCP peer (no X-Forwarded-For)
    status       BIGINT NOT NULL          -- the HTTP status of the answer
);

-- `GET /audit?object=contact:<id>`: the history of one object, newest first.
CREATE INDEX audit_log_object ON audit_log(object, id);
