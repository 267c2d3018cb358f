-- Erasure of a person's data (right to erasure) and what remains of it afterwards.
--
-- `erasures`: one row per erasure, written before anything is deleted, with the plan
-- (ids and file names only, never personal data) so that an erasure interrupted by a
-- crash is finished at the next start. It is also the record that the erasure happened:
-- the entity reference and the counts, nothing else.
CREATE TABLE erasures (
    id           TEXT PRIMARY KEY,        -- UUID v7
    entity       TEXT NOT NULL,           -- lead:<id> | contact:<id>
    plan         TEXT NOT NULL,           -- JSON: ids of rows and names of files to erase
    counts       TEXT NOT NULL,           -- JSON: {entities, activities, calls, emails, recordings}
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT                   -- NULL: not finished, resumed at start
);

-- Tombstones: salted SHA-256 of the erased person's identifiers and of the Call-IDs and
-- Message-IDs of what was erased, so a replayed call event or a re-synced mailbox does
-- not bring the data back.
CREATE TABLE tombstones (
    hash       TEXT PRIMARY KEY,          -- hex SHA-256 of salt, kind and value
    kind       TEXT NOT NULL,             -- identifier | call_id | message_id
    erased_at  BIGINT NOT NULL
);

-- The installation's salt of the tombstones, made at the first erasure.
CREATE TABLE privacy_salt (
    id    BIGINT PRIMARY KEY,             -- always 1
    salt  TEXT NOT NULL
);
