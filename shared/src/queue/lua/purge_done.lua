-- Forgets finished tasks. apalis-redis keeps every task's payload and
-- metadata forever (its own vacuum reads the whole data hash in one call
-- and deletes payloads still waiting for a retry); Ebb's tasks carry only
-- (run, batch) references, whose truth is in Postgres, so a finished task
-- is dropped outright, a bounded number per call.
--
-- KEYS[1]: the done set   KEYS[2]: the task data hash
-- ARGV[1]: the task metadata key prefix   ARGV[2]: at most this many tasks
-- Returns the number of tasks forgotten.
local ids = redis.call("SPOP", KEYS[1], tonumber(ARGV[2]))
for _, id in ipairs(ids) do
    redis.call("HDEL", KEYS[2], id)
    redis.call("DEL", ARGV[1] .. ":" .. id)
end
return #ids
