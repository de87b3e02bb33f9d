-- QuorumKV: create-only PUT (If-None-Match: *) of a fresh key each time. ok = 201.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["If-None-Match"] = "*"
function request()
  return wrk.format("PUT", "/v1/kv/" .. fresh_key(), nil, VALUE)
end
function response(status, headers, body)
  count(status == 201, status, body)
end
