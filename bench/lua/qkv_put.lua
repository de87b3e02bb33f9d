-- QuorumKV: PUT /v1/kv/{random key} with a BENCH_VALUE-byte body. ok = 200/201.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.headers["Content-Type"] = "application/octet-stream"
local paths = {}
function workload_init()
  for i = 0, KEYSPACE - 1 do paths[i] = "/v1/kv/" .. key_name(i) end
end
function request()
  return wrk.format("PUT", paths[key_index()], nil, VALUE)
end
function response(status, headers, body)
  count(status == 200 or status == 201, status, body)
end
