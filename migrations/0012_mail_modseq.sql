-- Incremental seen/deleted sync (E9) with RFC 7162 CONDSTORE/QRESYNC: where the last
-- flag pass of a folder left off. Kept apart from the new-mail checkpoint (uid_validity,
-- last_uid) because it is written by the flag pass, for the UIDVALIDITY it read: a flag
-- checkpoint of another UIDVALIDITY is void. NULL modseq: the next pass reads every
-- message's flags (no CONDSTORE, NOMODSEQ, or never synced).
ALTER TABLE mail_folders ADD COLUMN flags_uid_validity BIGINT;
ALTER TABLE mail_folders ADD COLUMN highest_modseq BIGINT;
-- Without QRESYNC deletions are found by position: `known_count` messages had a UID up to
-- `known_uid` when last listed.
ALTER TABLE mail_folders ADD COLUMN known_uid BIGINT;
ALTER TABLE mail_folders ADD COLUMN known_count BIGINT;
