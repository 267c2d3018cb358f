-- What the web console reads and writes through the API: notes on activities, the
-- filters of the entity lists and the call log, an employee's open work, statistics, when
-- an API token was last used, and since when a phone is registered. Portable SQL as in
-- 0001 (runs unchanged on SQLite and PostgreSQL).

-- The agent's note on an activity (what was said on the call, what to do next); NULL: none.
ALTER TABLE activities ADD COLUMN note TEXT;

-- "My work": `responsible = ? AND completed = 0 ORDER BY id DESC`, one ordered index range.
CREATE INDEX activities_responsible_open ON activities(responsible, completed, id);

-- Entity list filters, each an ordered range in the list's `id` order: leads by status,
-- deals by pipeline and by stage, a company's contacts. Deals by contact or company use
-- deals_contact and deals_company of 0001.
CREATE INDEX leads_status ON leads(status, id);
CREATE INDEX deals_pipeline ON deals(pipeline_id, id);
CREATE INDEX deals_stage ON deals(stage_id, id);
CREATE INDEX contacts_company ON contacts(company_id, id);

-- The call log and its statistics by our number.
CREATE INDEX calls_number ON calls(number, started_at);

-- Mail statistics count by intake time (E15's ingested_at).
CREATE INDEX emails_ingested ON emails(ingested_at);

-- When the token last authenticated a request; written at most once a minute per token.
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;

-- When the binding was first registered (refreshes keep it). Bindings from before this
-- column show their last refresh instead.
ALTER TABLE registrations ADD COLUMN registered_at BIGINT;
