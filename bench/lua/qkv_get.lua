-- QuorumKV: linearizable GET /v1/kv/{random key}. ok = 200 (or 404, counted as a miss).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local paths = {}
function workload_init()
  for i = 0, KEYSPACE - 1 do paths[i] = "/v1/kv/" .. key_name(i) end
end
function request()
  return wrk.format("GET", paths[key_index()])
end
function response(status, headers, body)
  count(status == 200 or status == 404, status, body, status == 404)
end
