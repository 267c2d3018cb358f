-- OAuth2 mailboxes: Microsoft 365 and Gmail no longer take IMAP passwords, so a mailbox
-- may log in with an access token instead (SASL OAUTHBEARER or XOAUTH2), obtained with
-- its refresh token at its token endpoint (RFC 6749 section 6). An OAuth2 mailbox keeps
-- an empty password. The client secret and the refresh token are write-only like the
-- password: never returned (A4).

ALTER TABLE mailboxes ADD COLUMN auth TEXT NOT NULL DEFAULT 'password';  -- password | oauth2
ALTER TABLE mailboxes ADD COLUMN oauth2_provider TEXT;                    -- microsoft | google | NULL
ALTER TABLE mailboxes ADD COLUMN oauth2_token_url TEXT;
ALTER TABLE mailboxes ADD COLUMN oauth2_device_authorization_url TEXT;    -- RFC 8628, for `mailbox authorize`
ALTER TABLE mailboxes ADD COLUMN oauth2_client_id TEXT;
ALTER TABLE mailboxes ADD COLUMN oauth2_client_secret TEXT;               -- NULL: a public client
ALTER TABLE mailboxes ADD COLUMN oauth2_refresh_token TEXT;               -- NULL: not authorized yet
ALTER TABLE mailboxes ADD COLUMN oauth2_scope TEXT;
