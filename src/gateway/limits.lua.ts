/**
 * The Redis side of the per-key limits, one script per check so that every process and replica
 * sees and changes the same counters atomically, on Redis' own clock (TIME). The per-process
 * fallback (local-limits.ts) implements the same rules; keep the two in step.
 *
 * KEYS[1] requests per second (HASH second -> count)      KEYS[2] tokens per second (HASH)
 * KEYS[3] requests in flight (ZSET id -> lease expiry ms)  KEYS[4] their reserved cost (HASH id -> nano-USD)
 * KEYS[5] prefix of the spend counters ("<prefix>d:<day>", "<prefix>m:<yyyymm>", nano-USD)
 *
 * Windows are 60 one-second buckets. Limits of -1 do not apply. Money is in nano-dollars so that
 * Lua's doubles stay exact (up to 9 million USD).
 */
/** Expiry that is only ever extended: one request's shorter lease must not cut another's short. */
const EXTEND = `
local function extend(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
`;

const COMMON = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sec = math.floor(now / 1000)
local day = math.floor(now / 86400000)

local function month_of(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y * 100 + m
end
local month = month_of(day)

${EXTEND}
-- The spend counter of a period: at least the baseline the caller read from the request log, if
-- that baseline is for this very period. A missing counter starts from it; one below it missed
-- spend (made while the key had no budget, or counted per process while Redis was away, both in
-- the request log by now) and is raised to it. INCRBY keeps the counter's expiry. The third
-- value says the counter was missing.
local function spend_key(kind, period, base_period, base_value, ttl, create)
  local k = KEYS[5] .. kind .. ':' .. period
  local base = 0
  if tostring(period) == base_period then base = tonumber(base_value) or 0 end
  local v = redis.call('GET', k)
  if v then
    v = tonumber(v)
    if base <= v then return v, k, false end
    if create then redis.call('INCRBY', k, base - v) end
    return base, k, false
  end
  if create then redis.call('SET', k, base, 'PX', ttl) end
  return base, k, true
end
`;

export const ADMIT_LUA = `${COMMON}
local rid = ARGV[1]
local rpm, tpm, conc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local day_budget, month_budget = tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens, cost, lease = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])

local function window(key)
  local flat = redis.call('HGETALL', key)
  local used, buckets, stale = 0, {}, {}
  for i = 1, #flat, 2 do
    local b, n = tonumber(flat[i]), tonumber(flat[i + 1])
    if b <= sec - 60 then stale[#stale + 1] = flat[i] else used = used + n; buckets[#buckets + 1] = { b, n } end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(buckets, function(x, y) return x[1] < y[1] end)
  return used, buckets
end
local function wait_for(buckets, used, limit, need)
  local freed = 0
  for _, bn in ipairs(buckets) do
    freed = freed + bn[2]
    if used - freed + need <= limit then return (bn[1] + 60) * 1000 - now end
  end
  return 60000
end
local function reset_of(buckets)
  if #buckets > 0 then return (buckets[1][1] + 60) * 1000 - now end
  return (sec + 60) * 1000 - now
end

local rpm_used, rpm_reset, tpm_used, tpm_reset = 0, 0, 0, 0
local function refuse(name, retry, a, b, c)
  return { 0, name, math.max(0, retry), now, sec, rpm_used, rpm_reset, tpm_used, tpm_reset, a or 0, b or 0, c or 0, month }
end

-- Both windows are read before either refuses, so that a refusal's headers show both.
local rpm_buckets, tpm_buckets
if rpm >= 0 then
  rpm_used, rpm_buckets = window(KEYS[1])
  rpm_reset = reset_of(rpm_buckets)
end
if tpm >= 0 then
  tpm_used, tpm_buckets = window(KEYS[2])
  tpm_reset = reset_of(tpm_buckets)
end
-- A request larger than the whole tpm_limit never fits: said first, so that no wait is asked for.
if tpm >= 0 and tokens > tpm then return refuse('tpm', wait_for(tpm_buckets, tpm_used, tpm, tokens)) end
if rpm >= 0 and rpm_used + 1 > rpm then return refuse('rpm', wait_for(rpm_buckets, rpm_used, rpm, 1)) end
if tpm >= 0 and tpm_used + tokens > tpm then return refuse('tpm', wait_for(tpm_buckets, tpm_used, tpm, tokens)) end

local budgets = day_budget >= 0 or month_budget >= 0
local track = conc >= 0 or budgets
if track then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  if #expired > 0 then
    redis.call('ZREM', KEYS[3], unpack(expired))
    redis.call('HDEL', KEYS[4], unpack(expired))
  end
  if conc >= 0 and redis.call('ZCARD', KEYS[3]) >= conc then return refuse('concurrency', 1000) end
end
local day_spent, month_spent = -1, -1
if budgets then
  local reserved = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[4])) do reserved = reserved + tonumber(v) end
  -- A budget the spend alone uses up frees at the end of its period; one that the requests in
  -- flight fill frees as they end (retry in a second). With both over, the one that frees later.
  local over, over_retry, over_spent = nil, 0, 0
  -- A counter Redis lost (a restart without persistence, an eviction) or has not made yet (a new
  -- period, a new key) starts from the request log's spend. The caller's figure may be stale (read
  -- when it cached the key, or what Redis last told it while another replica spent since): it is
  -- asked for one read just now (result 2), and that figure starts the counter (ARGV[14] '1').
  -- Should the read fail ('2'), the caller's figure is checked against but starts nothing.
  local mode = ARGV[14]
  local missing, counter = false, nil
  if day_budget >= 0 then
    day_spent, counter, missing = spend_key('d', day, ARGV[10], ARGV[11], 172800000, mode == '1')
    if missing and mode == '0' then return { 2 } end
    if day_spent + reserved + cost > day_budget then
      over, over_retry, over_spent = 'daily_budget', 1000, day_spent
      if day_spent + cost > day_budget then over_retry = (day + 1) * 86400000 - now end
    end
  end
  if month_budget >= 0 then
    month_spent, counter, missing = spend_key('m', month, ARGV[12], ARGV[13], 2764800000, mode == '1')
    if missing and mode == '0' then return { 2 } end
    if month_spent + reserved + cost > month_budget then
      -- 0: until the next month, which the client works out from now (never sooner than the day's end).
      local retry = 1000
      if month_spent + cost > month_budget then retry = 0 end
      if over == nil or retry == 0 or retry > over_retry then over, over_retry, over_spent = 'monthly_budget', retry, month_spent end
    end
  end
  -- A call that costs nothing (count_tokens, a free model) spends no budget, spent or not.
  if over and cost > 0 then return refuse(over, over_retry, over_spent, reserved, cost) end
end

if rpm >= 0 then
  redis.call('HINCRBY', KEYS[1], sec, 1)
  redis.call('PEXPIRE', KEYS[1], 120000)
  rpm_used = rpm_used + 1
end
if tpm >= 0 then
  redis.call('HINCRBY', KEYS[2], sec, tokens)
  redis.call('PEXPIRE', KEYS[2], 120000)
  tpm_used = tpm_used + tokens
end
if track then
  redis.call('ZADD', KEYS[3], now + lease, rid)
  extend(KEYS[3], lease + 60000)
  if budgets then
    redis.call('HSET', KEYS[4], rid, cost)
    extend(KEYS[4], lease + 60000)
  end
end
-- What was spent (-1: no such budget), so that the process can go on from it should Redis go away.
return { 1, '', 0, now, sec, rpm_used, rpm_reset, tpm_used, tpm_reset, 0, 0, 0, month, day, day_spent, month_spent }
`;

/**
 * ARGV: request id, bucket (second) it was admitted in, tokens reserved, tokens used, cost
 * (nano-USD), day and spend baseline, month and spend baseline, track tokens (1/0), track spend
 * (1/0), 1 for a replay of a settlement that timed out (Redis may have run it all the same once
 * it answered again, so it is made only while the request is still in flight there), the
 * baseline's mode ('0' the caller's, '1' read from the request log just now, '2' that read failed),
 * and the key's budgets ('d', 'm', 'dm').
 */
export const SETTLE_LUA = `${COMMON}
local rid, bucket = ARGV[1], tonumber(ARGV[2])
local estimate, actual, cost = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if ARGV[12] == '1' and not redis.call('ZSCORE', KEYS[3], rid) then return { now, month, day, -1, -1 } end
-- A request counts in the period it started in (its admission second), as its api_logs row does.
local admitted_day = math.floor(bucket / 86400)
local spends = ARGV[11] == '1' and cost > 0
local day_key, month_key = KEYS[5] .. 'd:' .. day, KEYS[5] .. 'm:' .. month
local in_day, in_month = admitted_day == day, month_of(admitted_day) == month
-- A counter Redis lost is started again from the request log, not from the caller's figure (which
-- may be stale, as for an admission): asked for (result -2) before anything is changed, and given
-- with ARGV[13] '1'; should the read fail ('2'), a missing counter is left for an admission. Only
-- the counters of the key's budgets (ARGV[14]: 'd', 'm') are asked for.
local mode, budgets = ARGV[13], ARGV[14] or ''
-- Each counter looked up once, and only when spend is counted.
local has_day = spends and in_day and redis.call('EXISTS', day_key) == 1
local has_month = spends and in_month and redis.call('EXISTS', month_key) == 1
local budget_day, budget_month = string.find(budgets, 'd', 1, true) ~= nil, string.find(budgets, 'm', 1, true) ~= nil
if spends and mode == '0' and ((in_day and budget_day and not has_day) or (in_month and budget_month and not has_month)) then
  return { -2 }
end
redis.call('ZREM', KEYS[3], rid)
redis.call('HDEL', KEYS[4], rid)
if ARGV[10] == '1' then
  local delta = actual - estimate
  if bucket > sec - 60 then
    if delta > 0 then
      redis.call('HINCRBY', KEYS[2], bucket, delta)
    elseif delta < 0 then
      -- Never below zero: a bucket whose count was lost (a restart without persistence,
      -- FLUSHALL) must not go negative and grant the unused estimate on top of the limit.
      local had = tonumber(redis.call('HGET', KEYS[2], bucket) or '0') or 0
      if had > 0 then redis.call('HINCRBY', KEYS[2], bucket, math.max(delta, -had)) end
    end
  elseif delta > 0 then
    redis.call('HINCRBY', KEYS[2], sec, delta)
  end
  redis.call('PEXPIRE', KEYS[2], 120000)
end
local day_spent, month_spent = -1, -1
-- Counted where a counter is; started (from the request log's figure) only for a budget's period.
if spends then
  if in_day and (has_day or (mode == '1' and budget_day)) then
    local _, dk = spend_key('d', day, ARGV[6], ARGV[7], 172800000, true)
    day_spent = redis.call('INCRBY', dk, cost)
  end
  if in_month and (has_month or (mode == '1' and budget_month)) then
    local _, mk = spend_key('m', month, ARGV[8], ARGV[9], 2764800000, true)
    month_spent = redis.call('INCRBY', mk, cost)
  end
end
return { now, month, day, day_spent, month_spent }
`;

/**
 * Renews the leases of requests this process is still serving, on Redis' clock, and puts back
 * those Redis lost (a restart without persistence) or let lapse while it was away; a lease is
 * only ever extended. KEYS[1] in flight, KEYS[2] reservations; ARGV: lease (ms), then per
 * request its id and reserved cost (nano-USD, or -1 for none).
 */
export const RENEW_LUA = `${EXTEND}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local reserved = false
for i = 2, #ARGV, 2 do
  local rid = ARGV[i]
  local held = redis.call('ZSCORE', KEYS[1], rid)
  if not held or tonumber(held) < now + lease then redis.call('ZADD', KEYS[1], now + lease, rid) end
  if tonumber(ARGV[i + 1]) >= 0 then
    redis.call('HSETNX', KEYS[2], rid, ARGV[i + 1])
    reserved = true
  end
end
extend(KEYS[1], lease + 60000)
if reserved then extend(KEYS[2], lease + 60000) end
return 1
`;
