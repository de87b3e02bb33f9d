-- etcd 3.4 JSON gateway: POST /v3/kv/put {key, value} (base64). ok = 200.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.headers["Content-Type"] = "application/json"
local keys = {}
local value64
function workload_init()
  for i = 0, KEYSPACE - 1 do keys[i] = b64(key_name(i)) end
  value64 = b64(VALUE)
end
function request()
  local body = '{"key":"' .. keys[key_index()] .. '","value":"' .. value64 .. '"}'
  return wrk.format("POST", "/v3/kv/put", nil, body)
end
function response(status, headers, body)
  count(status == 200, status, body)
end
