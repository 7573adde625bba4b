-- Moves due tasks from a queue's scheduled set to its active list, a chunk
-- at a time. apalis-redis pushes every task into the scheduled set and its
-- fetch promotes all due ones with a single `unpack`, which Redis refuses
-- beyond about 8,000 values ("too many results to unpack"): one large run
-- would make every fetch of the queue fail, forever. Promoting here first
-- keeps what the fetch sees small, however large the run.
--
-- KEYS[1]: the scheduled set     KEYS[2]: the active list
-- KEYS[3]: the signal list
-- ARGV[1]: now (unix seconds, the clock apalis-redis scores with)
-- ARGV[2]: ids per chunk         ARGV[3]: at most this many ids per call
-- Returns the number of tasks moved.
local chunk = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local moved = 0
while moved < limit do
    local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, math.min(chunk, limit - moved))
    if #ids == 0 then
        break
    end
    redis.call("RPUSH", KEYS[2], unpack(ids))
    redis.call("ZREM", KEYS[1], unpack(ids))
    moved = moved + #ids
end
if moved > 0 then
    redis.call("DEL", KEYS[3])
    redis.call("LPUSH", KEYS[3], 1)
end
return moved
