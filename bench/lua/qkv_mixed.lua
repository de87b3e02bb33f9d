-- QuorumKV: linearizable GETs (a share of BENCH_READ_SHARE, default half) and PUTs on the
-- first BENCH_HOT_KEYS keys (default 10): reads that meet writes in flight, writes that
-- queue. ok = 200 (or 404 for a GET, counted as a miss), 201.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local paths = {}
function workload_init()
  for i = 0, HOT_KEYS - 1 do paths[i] = "/v1/kv/" .. key_name(i) end
end
function request()
  local path = paths[math.random(0, HOT_KEYS - 1)]
  if math.random() < READ_SHARE then
    return wrk.format("GET", path)
  end
  return wrk.format("PUT", path, {["Content-Type"] = "application/octet-stream"}, VALUE)
end
function response(status, headers, body)
  count(status == 200 or status == 201 or status == 404, status, body, status == 404)
end
