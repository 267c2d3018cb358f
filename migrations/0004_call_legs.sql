-- The legs of a call routed by the B2BUA: who was rung on which device, and how each
-- ended (JSON array; NULL for calls pushed by a PBX over /calls/events).
ALTER TABLE calls ADD COLUMN legs TEXT;
