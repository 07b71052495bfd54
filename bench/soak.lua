-- wrk: the soak's mix (bench/soak.py writes the values below into a copy of this file).
-- 80 % reads: lists, text search, cursor pages, single items; 20 % writes: new items,
-- stock movements with an Idempotency-Key (one in ten a retry of an earlier one),
-- batches of 5 new items. Counts answers by class; done() prints one JSON line.

local token = "@TOKEN@"
local salt = @SALT@  -- one per wrk process: names and keys never collide between them
local items = @ITEMS@
local stores = @STORES@
local cursors = { @CURSORS@ }
local words = { "red", "green", "blue", "steel", "oak", "cotton" }

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(_args)
  math.randomseed(os.time() + id * 7919 + salt)
  status_2xx, status_4xx, status_5xx, other, keys = 0, 0, 0, 0, {}
end

local json_headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }

local function next_name()
  counter = counter + 1
  return "soak-" .. salt .. "-" .. id .. "-" .. os.time() .. "-" .. counter
end

request = function()
  local r = math.random(100)
  if r <= 25 then
    return wrk.format("GET", "/items?page_size=20&sort=" .. (r % 2 == 0 and "name" or "-price"))
  elseif r <= 40 then
    return wrk.format("GET", "/items?page_size=20&q=" .. words[math.random(#words)])
  elseif r <= 55 then
    return wrk.format("GET", cursors[math.random(#cursors)])
  elseif r <= 80 then
    return wrk.format("GET", "/items/" .. math.random(items))
  elseif r <= 88 then
    local body = string.format('{"name": "%s", "price": "%d.50", "store_id": %d}',
      next_name(), math.random(99), math.random(stores))
    return wrk.format("POST", "/items", json_headers, body)
  elseif r <= 97 then
    local key
    if #keys > 0 and math.random(10) == 1 then
      key = keys[math.random(#keys)]  -- a retry: answered again, nothing done twice
    else
      key = "soak-" .. salt .. "-" .. id .. "-" .. counter .. "-" .. math.random(1000000000)
      counter = counter + 1
      if #keys < 1000 then table.insert(keys, key) end
    end
    local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token,
                      ["Idempotency-Key"] = key }
    -- The item a key names is fixed by the key (a retry sends the same request).
    local item = (tonumber(string.match(key, "(%d+)$")) % items) + 1
    return wrk.format("POST", "/items/" .. item .. "/stock", headers,
      '{"delta": 1, "reason": "received"}')
  else
    local create = {}
    for i = 1, 5 do
      create[i] = string.format('{"name": "%s", "price": "1.25"}', next_name())
    end
    return wrk.format("POST", "/stores/" .. math.random(stores) .. "/items/batch", json_headers,
      '{"create": [' .. table.concat(create, ",") .. ']}')
  end
end

response = function(status, _headers, _body)
  if status >= 500 then status_5xx = status_5xx + 1
  elseif status >= 400 then status_4xx = status_4xx + 1
  elseif status >= 200 and status < 300 then status_2xx = status_2xx + 1
  else other = other + 1 end
end

done = function(summary, latency, _requests)
  local c2, c4, c5, co = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    c2 = c2 + thread:get("status_2xx")
    c4 = c4 + thread:get("status_4xx")
    c5 = c5 + thread:get("status_5xx")
    co = co + thread:get("other")
  end
  io.write(string.format(
    'SOAK {"requests": %d, "seconds": %.3f, "errors": %d, "p50": %.3f, "p95": %.3f, ' ..
    '"p99": %.3f, "max": %.3f, "s2xx": %d, "s4xx": %d, "s5xx": %d, "other": %d}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, c2, c4, c5, co))
end
