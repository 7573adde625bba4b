-- The payloads of every task a queue still holds: waiting (active list),
-- scheduled (new, or a retry), or fetched by a registered worker (its
-- in-flight set, which apalis-redis puts back on the queue should that
-- worker go silent). A task in none of them is lost. One script, so no task
-- moving between them is missed or seen twice.
--
-- KEYS[1]: the active list   KEYS[2]: the scheduled set
-- KEYS[3]: the workers set   KEYS[4]: the task data hash
-- ARGV[1]: the prefix of the workers' in-flight sets
-- ARGV[2]: ids per HMGET
-- Returns the payloads (nil where a task has no data).
local ids = redis.call("LRANGE", KEYS[1], 0, -1)
for _, id in ipairs(redis.call("ZRANGE", KEYS[2], 0, -1)) do
    ids[#ids + 1] = id
end
for _, worker in ipairs(redis.call("ZRANGE", KEYS[3], 0, -1)) do
    for _, id in ipairs(redis.call("SMEMBERS", ARGV[1] .. ":" .. worker)) do
        ids[#ids + 1] = id
    end
end
local chunk = tonumber(ARGV[2])
local payloads = {}
for first = 1, #ids, chunk do
    local part = {}
    for i = first, math.min(first + chunk - 1, #ids) do
        part[#part + 1] = ids[i]
    end
    local data = redis.call("HMGET", KEYS[4], unpack(part))
    for i = 1, #part do
        payloads[#payloads + 1] = data[i]
    end
end
return payloads
