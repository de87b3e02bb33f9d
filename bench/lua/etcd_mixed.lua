-- etcd 3.4 JSON gateway: linearizable ranges (a share of BENCH_READ_SHARE, default half) and
-- puts on the first BENCH_HOT_KEYS keys (default 10). ok = 200.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.headers["Content-Type"] = "application/json"
local keys = {}
local value64
function workload_init()
  for i = 0, HOT_KEYS - 1 do keys[i] = b64(key_name(i)) end
  value64 = b64(VALUE)
end
function request()
  local key = keys[math.random(0, HOT_KEYS - 1)]
  if math.random() < READ_SHARE then
    return wrk.format("POST", "/v3/kv/range", nil, '{"key":"' .. key .. '"}')
  end
  return wrk.format("POST", "/v3/kv/put", nil, '{"key":"' .. key .. '","value":"' .. value64 .. '"}')
end
function response(status, headers, body)
  count(status == 200, status, body)
end
