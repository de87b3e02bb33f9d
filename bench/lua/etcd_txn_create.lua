-- etcd 3.4 JSON gateway: create-only compare-and-put of a fresh key each time:
-- POST /v3/kv/txn {compare: [create_revision(key) == 0], success: [put key value]}.
-- ok = 200 with "succeeded":true.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.headers["Content-Type"] = "application/json"
local value64
function workload_init()
  value64 = b64(VALUE)
end
function request()
  local k = b64(fresh_key())
  local body = '{"compare":[{"key":"' .. k .. '","result":"EQUAL","target":"CREATE","create_revision":"0"}],'
    .. '"success":[{"request_put":{"key":"' .. k .. '","value":"' .. value64 .. '"}}]}'
  return wrk.format("POST", "/v3/kv/txn", nil, body)
end
function response(status, headers, body)
  count(status == 200 and string.find(body, '"succeeded":true', 1, true) ~= nil, status, body)
end
