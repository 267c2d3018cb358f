-- The node whose B2BUA opened a call (NULL for calls pushed over the API), so that the
-- calls a lost node left open can be found and closed by another node.
ALTER TABLE calls ADD COLUMN node_id TEXT;
CREATE INDEX calls_open_node ON calls(node_id) WHERE ended_at IS NULL;
