-- etcd 3.4 JSON gateway: linearizable POST /v3/kv/range {key} (serializable=false, the
-- default). ok = 200; a reply without "kvs" is counted as a miss.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.headers["Content-Type"] = "application/json"
local keys = {}
function workload_init()
  for i = 0, KEYSPACE - 1 do keys[i] = b64(key_name(i)) end
end
function request()
  return wrk.format("POST", "/v3/kv/range", nil, '{"key":"' .. keys[key_index()] .. '"}')
end
function response(status, headers, body)
  local hit = status == 200 and string.find(body, '"kvs"', 1, true) ~= nil
  count(status == 200, status, body, status == 200 and not hit)
end
