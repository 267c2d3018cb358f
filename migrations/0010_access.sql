-- An agent's entity lists are `responsible IN (…) AND id > cursor ORDER BY id`.
-- With (responsible, id) a page at level `own` is one ordered index range that stops at
-- the page's end; the single-column indexes made the database sort all of the agent's
-- entities for every page.
DROP INDEX contacts_responsible;
DROP INDEX companies_responsible;
DROP INDEX leads_responsible;
DROP INDEX deals_responsible;
CREATE INDEX contacts_responsible ON contacts(responsible, id);
CREATE INDEX companies_responsible ON companies(responsible, id);
CREATE INDEX leads_responsible ON leads(responsible, id);
CREATE INDEX deals_responsible ON deals(responsible, id);
