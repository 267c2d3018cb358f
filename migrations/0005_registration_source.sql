-- An INVITE from the exact address a phone registered from is that phone's, even when
-- a trunk's allowed_ips cover the address (phones and a PBX behind one office NAT).
CREATE INDEX registrations_source ON registrations(source);
