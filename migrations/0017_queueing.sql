-- Call-centre queueing: how a queue serves callers who wait, the agents' presence, and
-- each call's queue and wait.

-- Per queue: who is offered a waiting caller (in_turn | ring_all | longest_idle), how
-- long a caller may wait before the overflow rule (voicemail | forward | reject), the
-- agents' wrap-up after a call, the position announcement (1) and the music's file
-- name in the data dir's `music` folder (NULL: the built-in pattern).
ALTER TABLE queues ADD COLUMN strategy TEXT NOT NULL DEFAULT 'in_turn';
ALTER TABLE queues ADD COLUMN max_wait_s BIGINT NOT NULL DEFAULT 300;
ALTER TABLE queues ADD COLUMN wrap_up_s BIGINT NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN announce_position BIGINT NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN overflow_action TEXT NOT NULL DEFAULT 'voicemail';
ALTER TABLE queues ADD COLUMN overflow_forward_to TEXT;
ALTER TABLE queues ADD COLUMN music TEXT;

-- Per employee: available | paused | offline, the pause's reason, and since when; and
-- how many calls of ours they may be in at once before queues stop offering them more.
ALTER TABLE users ADD COLUMN presence TEXT NOT NULL DEFAULT 'available';
ALTER TABLE users ADD COLUMN max_calls BIGINT NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN presence_reason TEXT;
ALTER TABLE users ADD COLUMN presence_since BIGINT;

-- Per call: the queue of the number it came in on, and how long the caller waited in
-- it (milliseconds; NULL when the caller never waited).
ALTER TABLE calls ADD COLUMN queue_id TEXT;
ALTER TABLE calls ADD COLUMN wait_ms BIGINT;
CREATE INDEX calls_queue_started ON calls(queue_id, started_at);
