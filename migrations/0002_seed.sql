-- Built-in sources (T8) and the default sales pipeline (T12) every account starts with.
INSERT INTO sources (code, name, builtin, created_at) VALUES
    ('CALL', 'Call', 1, 0),
    ('EMAIL', 'E-mail', 1, 0),
    ('WEB', 'Website', 1, 0),
    ('OTHER', 'Other', 1, 0);

INSERT INTO pipelines (id, name, is_default, created_at) VALUES ('default', 'Sales', 1, 0);

INSERT INTO stages (id, pipeline_id, name, position, status) VALUES
    ('default-new', 'default', 'New', 0, 'open'),
    ('default-in-progress', 'default', 'In progress', 1, 'open'),
    ('default-won', 'default', 'Won', 2, 'won'),
    ('default-lost', 'default', 'Lost', 3, 'lost');
