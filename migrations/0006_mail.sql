-- The mail side: connected IMAP mailboxes, their checkpoints, and the mail
-- store. Portable SQL as in 0001: ids are UUID text, times UTC milliseconds, flags
-- BIGINT 0/1, lists JSON text; BYTEA holds the raw message (a BLOB on SQLite).

CREATE TABLE mailboxes (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    kind                   TEXT NOT NULL,          -- personal | company (E1)
    owner                  TEXT REFERENCES users(id) ON DELETE CASCADE,
    address                TEXT NOT NULL,          -- the mailbox's own address (M6), lowercased
    host                   TEXT NOT NULL,
    port                   BIGINT NOT NULL,
    security               TEXT NOT NULL,          -- tls | starttls | none
    username               TEXT NOT NULL,
    password               TEXT NOT NULL,          -- for the IMAP login; never returned (A4)
    folders                TEXT,                   -- JSON list; NULL = inbox and sent (SPECIAL-USE)
    spam_folder            TEXT,
    sync_window_days       BIGINT,                 -- NULL = all mail
    crm_link               BIGINT NOT NULL,
    create_leads_incoming  BIGINT NOT NULL,
    create_leads_outgoing  BIGINT NOT NULL,
    vcard_contacts         BIGINT NOT NULL,
    route_to_responsible   BIGINT NOT NULL,        -- E13
    blacklist              TEXT NOT NULL,          -- JSON list of addresses and @domains (M5)
    queue_id               TEXT REFERENCES queues(id) ON DELETE SET NULL,
    check_every            TEXT NOT NULL,          -- idle | 2m | 5m | 10m | 1h | 3h | 12h
    state                  TEXT NOT NULL,          -- connecting | syncing | idle | error
    last_error             TEXT,
    last_sync_at           BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
-- One mailbox per IMAP account: two would ingest every message twice.
CREATE UNIQUE INDEX mailboxes_account ON mailboxes(host, port, username);

-- Where the poller is in each folder: a restart resumes after last_uid; a new
-- uid_validity means the folder's UIDs were reassigned (RFC 3501 §2.3.1.1).
CREATE TABLE mail_folders (
    mailbox_id    TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    folder        TEXT NOT NULL,
    role          TEXT NOT NULL,                   -- inbox | sent | other
    uid_validity  BIGINT NOT NULL,
    last_uid      BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, folder)
);

-- The mail store: every message collected, whether or not it reached the CRM.
CREATE TABLE emails (
    id                TEXT PRIMARY KEY,
    mailbox_id        TEXT REFERENCES mailboxes(id) ON DELETE CASCADE,  -- NULL: forward address
    folder            TEXT,
    uid_validity      BIGINT,
    uid               BIGINT,
    message_id        TEXT,
    in_reply_to       TEXT,
    thread_root       TEXT,                        -- first of References, else own Message-ID
    direction         TEXT NOT NULL,
    from_addr         TEXT NOT NULL,
    from_name         TEXT,
    to_addrs          TEXT NOT NULL,               -- JSON list
    cc_addrs          TEXT NOT NULL,               -- JSON list
    subject           TEXT NOT NULL,
    received_at       BIGINT NOT NULL,             -- E15: when the server received it
    ingested_at       BIGINT NOT NULL,             -- E15: when it entered the CRM
    completed_at      BIGINT,                      -- E15: when its activity was completed
    seen              BIGINT NOT NULL,
    attachments       TEXT NOT NULL,               -- JSON [{name, content_type, size}]
    size              BIGINT NOT NULL,
    raw               BYTEA NOT NULL,
    crm_action        TEXT NOT NULL,               -- created | attached | logged | ignored
    crm_reason        TEXT NOT NULL,
    created_entities  TEXT NOT NULL,               -- JSON list of entity refs created by it
    activity_id       TEXT
);
-- Idempotency (ARCHITECTURE.md): a message is collected once per folder position.
CREATE UNIQUE INDEX emails_position ON emails(mailbox_id, folder, uid_validity, uid);
CREATE INDEX emails_message_id ON emails(message_id);
CREATE INDEX emails_received ON emails(received_at);
CREATE INDEX emails_activity ON emails(activity_id);

-- An e-mail activity points at its message; one activity per Message-ID, however many
-- mailboxes or folders hold a copy.
ALTER TABLE activities ADD COLUMN email_message_id TEXT;
CREATE UNIQUE INDEX activities_email_message ON activities(email_message_id)
    WHERE email_message_id IS NOT NULL;
