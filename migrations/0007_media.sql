-- Media: the gateway in the RTP path, recordings, working hours and voicemail.

-- Per number: relay the media (1) or let it flow between the parties (0); record calls;
-- mixed (mono) or split (caller left, callee right) recordings; the weekly schedule and
-- the after-hours rule as JSON documents (NULL: always open / no rule); the greeting's
-- file name in the data dir's greetings folder.
ALTER TABLE numbers ADD COLUMN media_relay BIGINT NOT NULL DEFAULT 1;
ALTER TABLE numbers ADD COLUMN recording BIGINT NOT NULL DEFAULT 0;
ALTER TABLE numbers ADD COLUMN recording_channels TEXT NOT NULL DEFAULT 'split';
ALTER TABLE numbers ADD COLUMN hours TEXT;
ALTER TABLE numbers ADD COLUMN after_hours TEXT;
ALTER TABLE numbers ADD COLUMN greeting TEXT;

-- Per trunk: a carrier that only accepts media from the trunk's address needs the relay
-- on every call through it, whatever the number says (off unless asked for).
ALTER TABLE trunks ADD COLUMN media_relay BIGINT NOT NULL DEFAULT 0;

-- Per call: the relay's statistics (JSON), the recording's length, and whether the
-- recording is a voicemail message. `calls.recording` (from the first migration) holds
-- the recording's file name in the data dir's recordings folder.
ALTER TABLE calls ADD COLUMN media TEXT;
ALTER TABLE calls ADD COLUMN recording_ms BIGINT;
ALTER TABLE calls ADD COLUMN voicemail BIGINT NOT NULL DEFAULT 0;
