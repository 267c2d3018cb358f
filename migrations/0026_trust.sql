-- Caller trust and forwarded calls.
-- A number's trust rules (JSON of `crm::trust::TrustSettings`; '{}' is every default).
ALTER TABLE numbers ADD COLUMN trust TEXT NOT NULL DEFAULT '{}';
-- The first redirecting number of a forwarded call (E.164 when it normalises).
ALTER TABLE calls ADD COLUMN diverted_from TEXT;
-- The carrier's verification of the caller (RFC 8224 / ATIS-1000074 verstat), as received.
ALTER TABLE calls ADD COLUMN verstat TEXT;
-- Why the call was kept out of the CRM: rate | verification_failed | anonymous.
ALTER TABLE calls ADD COLUMN trust_flag TEXT;
