// The Lua run by the Redis counter store. Each script is one round trip and runs atomically, so
// checking every counter and then applying every amount cannot interleave with another caller.
//
// Amounts and maxima arrive as integer strings in millionths ("units"), never as fractions:
// Lua numbers are doubles, and summing 0.1 + 0.2 in doubles drifts, while integers below 2^53
// add exactly. Numbers handed back to Redis are formatted explicitly (%d, %.17g) because Redis
// turns a bare Lua number into text with %.14g, which would round large values. Whole numbers
// (times in ms, sums) take %d: glibc prints a double at %.17g with multi-precision arithmetic,
// which a profile of Redis under load showed among its costliest functions.
//
// Key layout per counter (every key of one call shares the `{group}` hash tag, see redis.ts):
//   rolling    a ZSET log (score = time, member = "<reservation id>:<units>") and a STRING state
//              "<sum> <oldest> <newest> <expires> <unit>": the log's running sum in units, a lower
//              bound of its oldest score (nothing can have left the window while that is inside
//              it, so most calls need not look), its newest score, when both keys expire (0:
//              unknown), and the units every entry counts when they all count the same (-1 when
//              they differ), so entries leaving are counted without reading them back
//   in_flight  a ZSET of holders (score = expiry time, same members) and the same STRING state
//   calendar   a STRING "<window index> <window length as given> <units in that window>"
// Keeping each state in one string costs one GET and one SET per counter and call.

/**
 * KEYS: per counter in request order: rolling and in_flight two keys (log, state), calendar one.
 * ARGV: [1] now in whole ms, or '' to read the server's clock; [2] reservation id; [3] expiry
 * margin ms; [4] in-flight holder lifetime ms; then four per counter: kind ('r' rolling,
 * 'c' calendar, 'f' in_flight), window ms, max units, amount units.
 * Returns {1, now, w1 … wn} when every counter admitted (all amounts were added), where wi is the
 * window index a calendar counter counted in (0 for other kinds), or {0, index, retryAfterMs
 * (-1: never), now} for the first counter that refused (nothing was added).
 */
export const RESERVE_LUA = `
local now
local serverClock = ARGV[1] == ''
if serverClock then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local rid = ARGV[2]
local margin = tonumber(ARGV[3])
local holdMs = tonumber(ARGV[4])
local n = (#ARGV - 4) / 4

local function units(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- Whole numbers print as integers (cheap, exact below 2^53); anything else keeps 17 digits.
local function num(x)
  if x == math.floor(x) and x > -9007199254740992 and x < 9007199254740992 then return string.format('%d', x) end
  return string.format('%.17g', x)
end

-- Reads a log's state and drops the entries scored at or below cutoff, subtracting them from the
-- sum. Returns sum, oldest, newest (oldest and newest nil when the log is empty), expires, unit,
-- and whether the state must be written back. A missing or unreadable state (first use, lost,
-- or written by an older version) is rebuilt from the log.
local function readLog(log, stateKey, cutoff)
  local state = redis.call('GET', stateKey)
  local sum, oldest, newest, expires, unit
  if state then
    local a, b, c, d, e = string.match(state, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
    sum, oldest, newest, expires, unit = tonumber(a), tonumber(b), tonumber(c), tonumber(d), tonumber(e)
  end
  if not (sum and oldest and newest and expires and unit) then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', num(cutoff))
    local all = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    if #all == 0 then return 0, nil, nil, 0, 0, false end
    sum, unit = 0, units(all[1])
    for i = 1, #all, 2 do
      local u = units(all[i])
      sum = sum + u
      if u ~= unit then unit = -1 end
    end
    return sum, tonumber(all[2]), tonumber(all[#all]), 0, unit, true
  end
  if oldest > cutoff then return sum, oldest, newest, expires, unit, false end
  if unit > 0 then
    -- Every entry counts the same, so how many left is enough. Everything left has a score
    -- above cutoff, which makes cutoff the new lower bound of the oldest.
    local gone = redis.call('ZREMRANGEBYSCORE', log, '-inf', num(cutoff))
    sum = sum - gone * unit
    if sum <= 0 then return 0, nil, nil, 0, 0, true end
    return sum, cutoff, newest, expires, unit, gone > 0
  end
  -- Something may have left: walk the log from its oldest end in growing batches (usually one
  -- or two entries leave per call, so the first small batch also finds the new oldest).
  local gone, from, size = 0, 0, 4
  while true do
    local batch = redis.call('ZRANGE', log, from, from + size - 1, 'WITHSCORES')
    for i = 1, #batch, 2 do
      local score = tonumber(batch[i + 1])
      if score > cutoff then
        if gone > 0 then redis.call('ZREMRANGEBYRANK', log, 0, gone - 1) end
        return sum, score, newest, expires, unit, gone > 0
      end
      sum = sum - units(batch[i])
      gone = gone + 1
    end
    if #batch < size * 2 then
      if gone > 0 then redis.call('ZREMRANGEBYRANK', log, 0, gone - 1) end
      return 0, nil, nil, 0, 0, true
    end
    from = from + size
    size = size * 4
  end
end

local function logState(sum, oldest, newest, expires, unit)
  return string.format('%d %s %s %s %d', sum, num(oldest), num(newest), num(expires), unit)
end

-- How long until the oldest entries that must go for need units to fit have left the window:
-- an entry at time t stops counting at t + window.
local function rollingWait(log, need, window)
  local freed, from, last = 0, 0, now - window
  while true do
    local batch = redis.call('ZRANGE', log, from, from + 127, 'WITHSCORES')
    if #batch == 0 then return last + window - now end
    for i = 1, #batch, 2 do
      last = tonumber(batch[i + 1])
      freed = freed + units(batch[i])
      if freed >= need then return last + window - now end
    end
    from = from + 128
  end
end

-- The calendar window a counter counts in, and its count. A clock that stepped back into an
-- earlier window stays in the later one (going back and forth would reset the count twice); a
-- different window length starts afresh.
local function readCalendar(key, window, text)
  local index = math.floor(now / window)
  local state = redis.call('GET', key)
  if state then
    local a, b, c = string.match(state, '^(%S+) (%S+) (%S+)$')
    local stored, count = tonumber(a), tonumber(c)
    if b == text and stored and count and stored >= index then return stored, count end
  end
  return index, 0
end

-- Check every counter first; a refusal returns before anything is added. A zero amount is
-- always admitted and touches nothing.
local sums, oldests, newests, expiries, unitsOf, dirty, windows = {}, {}, {}, {}, {}, {}, {}
local k = 1
for i = 1, n do
  local a = 4 + (i - 1) * 4
  local kind, text, max, amount = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local window = tonumber(text)
  local wait
  if amount > 0 then
    if amount > max then wait = -1
    elseif kind == 'c' then
      local index, count = readCalendar(KEYS[k], window, text)
      windows[i], sums[i] = index, count
      if count + amount > max then wait = (index + 1) * window - now end
    else
      local cutoff = now
      if kind == 'r' then cutoff = now - window end
      local sum, oldest, newest, expires, unit, changed = readLog(KEYS[k], KEYS[k + 1], cutoff)
      sums[i], oldests[i], newests[i], expiries[i], unitsOf[i], dirty[i] = sum, oldest, newest, expires, unit, changed
      if sum + amount > max then
        if kind == 'r' then wait = rollingWait(KEYS[k], sum + amount - max, window) else wait = 1000 end
      end
    end
    if wait then
      -- Nothing is added, but logs trimmed on the way must keep their state in step.
      local j = 1
      for m = 1, i do
        if dirty[m] then
          if oldests[m] then
            local ttl = redis.call('PTTL', KEYS[j])
            if ttl > 0 then redis.call('SET', KEYS[j + 1], logState(sums[m], oldests[m], newests[m], expiries[m], unitsOf[m]), 'PX', ttl) end
          else
            redis.call('DEL', KEYS[j], KEYS[j + 1])
          end
        end
        if ARGV[4 + (m - 1) * 4 + 1] == 'c' then j = j + 1 else j = j + 2 end
      end
      return {0, i - 1, wait, now}
    end
  end
  if kind == 'c' then k = k + 1 else k = k + 2 end
end

-- Every counter admits: add every amount, and give every key written an expiry so idle counters
-- vanish by themselves.
local reply = {1, now}
k = 1
for i = 1, n do
  local a = 4 + (i - 1) * 4
  local kind, text, amountText = ARGV[a + 1], ARGV[a + 2], ARGV[a + 4]
  local window, amount = tonumber(text), tonumber(amountText)
  reply[i + 2] = 0
  if kind == 'c' then
    if amount > 0 then
      local index = windows[i]
      reply[i + 2] = index
      local ttl = string.format('%d', math.ceil((index + 1) * window - now + margin))
      redis.call('SET', KEYS[k], string.format('%d %s %d', index, text, sums[i] + amount), 'PX', ttl)
    end
    k = k + 1
  else
    if amount > 0 then
      local score, needed
      if kind == 'r' then
        -- Never date an entry before the newest one (a clock that stepped back): it would leave
        -- the window too soon.
        score = now
        if newests[i] and newests[i] > score then score = newests[i] end
        needed = score + window
      else
        score = now + holdMs
        needed = score
        if newests[i] and newests[i] > needed then needed = newests[i] end
      end
      local newest = score
      if newests[i] and newests[i] > newest then newest = newests[i] end
      local oldest = oldests[i] or score
      if score < oldest then oldest = score end
      -- One entry that counts differently makes the log mixed until it empties.
      local unit = amount
      if oldests[i] and unitsOf[i] ~= amount then unit = -1 end
      redis.call('ZADD', KEYS[k], num(score), rid .. ':' .. amountText)
      -- The keys' expiry must outlast what they count. On the server's clock (the one Redis
      -- expires keys by) it is known exactly, so it is pushed out only when it falls short,
      -- by a margin at a time; on the caller's clock it is renewed on every write.
      local expires = expiries[i]
      if serverClock and expires >= needed + 1000 then
        redis.call('SET', KEYS[k + 1], logState(sums[i] + amount, oldest, newest, expires, unit), 'KEEPTTL')
      else
        if serverClock then
          expires = math.ceil(needed + margin)
          local at = string.format('%d', expires)
          redis.call('PEXPIREAT', KEYS[k], at)
          redis.call('SET', KEYS[k + 1], logState(sums[i] + amount, oldest, newest, expires, unit), 'PXAT', at)
        else
          local ttl = string.format('%d', math.ceil(needed + margin - now))
          redis.call('PEXPIRE', KEYS[k], ttl)
          redis.call('SET', KEYS[k + 1], logState(sums[i] + amount, oldest, newest, 0, unit), 'PX', ttl)
        end
      end
    end
    k = k + 2
  end
end
return reply
`;

/**
 * KEYS: per operation: rolling and in_flight two keys (log, state), calendar one.
 * ARGV: three per operation: kind ('r', 'c', 'f'), the member ("<reservation id>:<units>") or
 * for calendar "<window index> <window length>", amount units.
 * Takes back what one reservation added. A log entry that is gone (expired and trimmed) or a
 * calendar window that has turned over is left alone, so nothing is ever taken back twice or from
 * the wrong window. Returns 1.
 */
export const SETTLE_LUA = `
local k = 1
for i = 1, #ARGV, 3 do
  local kind, tag, amount = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if kind == 'c' then
    local state = redis.call('GET', KEYS[k])
    if state then
      local window, count = string.match(state, '^(%S+ %S+) (%S+)$')
      count = tonumber(count)
      if window == tag and count then
        -- Never below zero (the memory store clamps the same way).
        count = count - amount
        if count < 0 then count = 0 end
        redis.call('SET', KEYS[k], window .. ' ' .. string.format('%d', count), 'KEEPTTL')
      end
    end
    k = k + 1
  else
    if redis.call('ZREM', KEYS[k], tag) == 1 then
      local state = redis.call('GET', KEYS[k + 1])
      if state then
        local sum, rest = string.match(state, '^(%S+) (.*)$')
        sum = tonumber(sum)
        if sum then
          sum = sum - amount
          if sum < 0 then sum = 0 end
          -- The oldest score stays a lower bound, which is all it has to be.
          redis.call('SET', KEYS[k + 1], string.format('%d', sum) .. ' ' .. rest, 'KEEPTTL')
        end
      end
    end
    k = k + 2
  end
end
return 1
`;
