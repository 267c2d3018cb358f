-- The spine: employees, routing configuration, CRM entities, activities and the call log.
--
-- Portable SQL: this file runs unchanged on SQLite and PostgreSQL. Ids are UUID text,
-- times are UTC milliseconds (BIGINT), flags are BIGINT 0/1, lists are JSON text.
-- Uniqueness that the product promises (M7, event idempotency) is a constraint here,
-- never a check-then-insert in code.

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    email           TEXT UNIQUE,             -- lowercased (M3); NULL only for the bootstrap admin
    role            TEXT NOT NULL,           -- admin | agent
    extension       TEXT UNIQUE,
    sip_realm       TEXT,
    sip_ha1_md5     TEXT,                    -- RFC 8760: HA1 per algorithm, never the password
    sip_ha1_sha256  TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- An employee's own phone numbers (E.164 or digits), excluded from the CRM (M6).
CREATE TABLE user_phones (
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    value     TEXT NOT NULL,
    position  BIGINT NOT NULL,
    PRIMARY KEY (user_id, value)
);
CREATE INDEX user_phones_value ON user_phones(value);

-- T9: rotation is a counter; the next member is members[rotation % count].
CREATE TABLE queues (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    rotation    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE queue_members (
    queue_id  TEXT NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    position  BIGINT NOT NULL,
    PRIMARY KEY (queue_id, user_id)
);

CREATE TABLE trunks (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,           -- carrier | pbx
    profile       TEXT NOT NULL,
    host          TEXT,
    port          BIGINT NOT NULL,
    transport     TEXT NOT NULL,           -- udp | tcp
    username      TEXT,
    password      TEXT,                    -- needed to answer a carrier's challenge; never returned (A4)
    register      BIGINT NOT NULL,
    allowed_ips   TEXT NOT NULL,           -- JSON array
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Bearer tokens, stored as SHA-256 of the token. A token belongs to a user, or to a trunk
-- (a PBX pushing call events), or to neither: the bootstrap admin token.
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT REFERENCES users(id) ON DELETE CASCADE,
    trunk_id     TEXT REFERENCES trunks(id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    label        TEXT,
    created_at   BIGINT NOT NULL
);

CREATE TABLE sources (
    code        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    builtin     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE numbers (
    id                              TEXT PRIMARY KEY,
    number                          TEXT NOT NULL UNIQUE,   -- E.164
    trunk_id                        TEXT REFERENCES trunks(id),
    default_country                 TEXT NOT NULL,
    queue_id                        TEXT REFERENCES queues(id),
    lead_creation                   TEXT NOT NULL,
    directions                      TEXT NOT NULL,
    route_to_responsible            BIGINT NOT NULL,
    ring_timeout_s                  BIGINT NOT NULL,
    source                          TEXT NOT NULL REFERENCES sources(code),
    change_responsible_on_transfer  BIGINT NOT NULL,
    created_at                      BIGINT NOT NULL,
    updated_at                      BIGINT NOT NULL
);

-- Account-wide settings as JSON documents by key ("crm", later "access", "forward").
CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE pipelines (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    is_default  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
-- At most one default pipeline (T12).
CREATE UNIQUE INDEX pipelines_one_default ON pipelines(is_default) WHERE is_default = 1;

CREATE TABLE stages (
    id           TEXT PRIMARY KEY,
    pipeline_id  TEXT NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    position     BIGINT NOT NULL,
    status       TEXT NOT NULL,           -- open | won | lost: what a deal in this stage is
    UNIQUE (pipeline_id, position)
);

CREATE TABLE exceptions (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,            -- phone | email | domain
    value       TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE contacts (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    company_id        TEXT,
    responsible       TEXT REFERENCES users(id) ON DELETE SET NULL,
    source            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    last_activity_at  BIGINT NOT NULL
);
CREATE INDEX contacts_responsible ON contacts(responsible);

CREATE TABLE companies (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    responsible       TEXT REFERENCES users(id) ON DELETE SET NULL,
    source            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    last_activity_at  BIGINT NOT NULL
);
CREATE INDEX companies_responsible ON companies(responsible);

CREATE TABLE leads (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL,        -- new | converted | junk
    customer          TEXT,                 -- contact id, for repeat leads (E14)
    converted_contact TEXT,
    converted_company TEXT,
    converted_deal    TEXT,
    responsible       TEXT REFERENCES users(id) ON DELETE SET NULL,
    source            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    last_activity_at  BIGINT NOT NULL
);
CREATE INDEX leads_responsible ON leads(responsible);

CREATE TABLE deals (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    contact_id        TEXT,
    company_id        TEXT,
    pipeline_id       TEXT NOT NULL REFERENCES pipelines(id),
    stage_id          TEXT NOT NULL REFERENCES stages(id),
    status            TEXT NOT NULL,        -- open | won | lost
    responsible       TEXT REFERENCES users(id) ON DELETE SET NULL,
    source            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    last_activity_at  BIGINT NOT NULL
);
CREATE INDEX deals_contact ON deals(contact_id, status);
CREATE INDEX deals_company ON deals(company_id, status);
CREATE INDEX deals_responsible ON deals(responsible);

-- Every identifier on every entity, for matching (M1) and display. Not unique: a lead and
-- the contact it was converted into both carry the caller's number.
CREATE TABLE entity_identifiers (
    entity_kind  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    kind         TEXT NOT NULL,            -- phone | email
    value        TEXT NOT NULL,            -- the matcher's key: E.164, digits or lowercased e-mail
    position     BIGINT NOT NULL,
    PRIMARY KEY (entity_kind, entity_id, value)
);
CREATE INDEX entity_identifiers_value ON entity_identifiers(value);

-- M7: who owns an identifier. One row per identifier, ever: a second event for the same
-- new number loses the insert and attaches to the owner instead of creating a duplicate.
CREATE TABLE identifier_owners (
    value        TEXT PRIMARY KEY,
    entity_kind  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

-- The call log (T1, T13): every call, whether or not it reached the CRM.
CREATE TABLE calls (
    id              TEXT PRIMARY KEY,
    call_id         TEXT NOT NULL UNIQUE,   -- SIP Call-ID or the PBX's id
    direction       TEXT NOT NULL,
    from_raw        TEXT NOT NULL,
    to_raw          TEXT NOT NULL,
    customer        TEXT,                   -- the matcher's key of the customer side
    number_id       TEXT REFERENCES numbers(id) ON DELETE SET NULL,
    number          TEXT,                   -- E.164 of our number, kept if the number is deleted
    user_id         TEXT REFERENCES users(id) ON DELETE SET NULL,   -- who dialled (outgoing)
    answered_by     TEXT REFERENCES users(id) ON DELETE SET NULL,
    responsible     TEXT REFERENCES users(id) ON DELETE SET NULL,
    started_at      BIGINT NOT NULL,
    answered_at     BIGINT,
    ended_at        BIGINT,
    outcome         TEXT,
    crm_action      TEXT NOT NULL,          -- created | attached | offered | logged
    crm_reason      TEXT NOT NULL,
    created_entities TEXT NOT NULL,         -- JSON array of entity refs created by this call
    route           TEXT NOT NULL,          -- JSON array of user ids in ring order
    activity_id     TEXT,
    recording       TEXT
);
CREATE INDEX calls_started ON calls(started_at);
CREATE INDEX calls_customer ON calls(customer);

-- Idempotency of pushed call events: one row per (call, event), holding the first answer.
CREATE TABLE call_events (
    call_id     TEXT NOT NULL,
    event       TEXT NOT NULL,
    response    TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (call_id, event)
);

CREATE TABLE activities (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,          -- call | email
    direction     TEXT NOT NULL,
    subject       TEXT NOT NULL,
    completed     BIGINT NOT NULL,
    responsible   TEXT REFERENCES users(id) ON DELETE SET NULL,
    call_id       TEXT,                   -- calls.id
    matched       TEXT,                   -- M8: the entity the matcher chose, and why
    match_reason  TEXT,
    created_at    BIGINT NOT NULL,
    completed_at  BIGINT
);
CREATE INDEX activities_call ON activities(call_id);

CREATE TABLE activity_entities (
    activity_id  TEXT NOT NULL REFERENCES activities(id) ON DELETE CASCADE,
    entity_kind  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    PRIMARY KEY (activity_id, entity_kind, entity_id)
);
CREATE INDEX activity_entities_entity ON activity_entities(entity_kind, entity_id);
