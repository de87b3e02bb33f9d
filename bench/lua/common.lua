-- Shared code of the QuorumKV / etcd wrk scripts (loaded with dofile by each workload script).
--
-- Parameters come from the environment (set by bench/run.py):
--   BENCH_TARGETS   comma-separated host:port list; wrk threads are assigned round-robin to
--                   them (thread.addr), so the connections spread over all members
--   BENCH_KEYSPACE  number of keys (key-00000000 .. key-<N-1>), default 10000
--   BENCH_VALUE     value size in bytes, default 64
--   BENCH_HOT_KEYS  keys of the mixed workload (the first N of the keyspace), default 10
--   BENCH_READ_SHARE  share of reads in the mixed workload, default 0.5
--   BENCH_RUN       a unique run id (prefix of the fresh keys of create-only runs)
--   BENCH_SEED      random seed (default: time)
--
-- Each thread counts its responses: ok (the operation did what was asked), bad (anything
-- else, with the status codes in `codes`), miss (a read of an absent key). done() prints one
-- line "WRKJSON {...}" with throughput, latency percentiles (µs) and the counters.

local targets_env = os.getenv("BENCH_TARGETS") or ""
KEYSPACE = tonumber(os.getenv("BENCH_KEYSPACE") or "10000")
VALUE_SIZE = tonumber(os.getenv("BENCH_VALUE") or "64")
HOT_KEYS = tonumber(os.getenv("BENCH_HOT_KEYS") or "10")
READ_SHARE = tonumber(os.getenv("BENCH_READ_SHARE") or "0.5")
RUN_ID = os.getenv("BENCH_RUN") or tostring(os.time())
SEED = tonumber(os.getenv("BENCH_SEED") or tostring(os.time()))

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64tab = {}
for i = 1, 64 do b64tab[i - 1] = b64chars:sub(i, i) end

function b64(s)
  local out = {}
  local n = #s
  local i = 1
  while i <= n - 2 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + b * 256 + c
    out[#out + 1] = b64tab[math.floor(v / 262144) % 64] .. b64tab[math.floor(v / 4096) % 64]
      .. b64tab[math.floor(v / 64) % 64] .. b64tab[v % 64]
    i = i + 3
  end
  local rest = n - i + 1
  if rest == 1 then
    local v = s:byte(i) * 65536
    out[#out + 1] = b64tab[math.floor(v / 262144) % 64] .. b64tab[math.floor(v / 4096) % 64] .. "=="
  elseif rest == 2 then
    local a, b = s:byte(i, i + 1)
    local v = a * 65536 + b * 256
    out[#out + 1] = b64tab[math.floor(v / 262144) % 64] .. b64tab[math.floor(v / 4096) % 64]
      .. b64tab[math.floor(v / 64) % 64] .. "="
  end
  return table.concat(out)
end

function key_name(i)
  return string.format("key-%08d", i)
end

function key_index()
  return math.random(0, KEYSPACE - 1)
end

function random_key()
  return key_name(key_index())
end

-- a fresh key for create-only runs: unique per run, thread and request
local fresh_counter = 0
function fresh_key()
  fresh_counter = fresh_counter + 1
  return string.format("new-%s-%d-%d", RUN_ID, id or 0, fresh_counter)
end

function make_value(n)
  local t = {}
  local alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
  for i = 1, n do
    local j = math.random(1, #alphabet)
    t[i] = alphabet:sub(j, j)
  end
  return table.concat(t)
end

-- ---------------------------------------------------------------- setup phase (main state)
local threads = {}
local counter = 0
local addrs = nil

local function resolve_targets()
  local list = {}
  for hp in string.gmatch(targets_env, "[^,]+") do
    local host, port = hp:match("^(.*):(%d+)$")
    local found = wrk.lookup(host, port)
    if found and found[1] then list[#list + 1] = found[1] end
  end
  return list
end

function setup(thread)
  if addrs == nil then addrs = resolve_targets() end
  if #addrs > 0 then
    thread.addr = addrs[(counter % #addrs) + 1]
  end
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

-- ---------------------------------------------------------------- running phase (per thread)
ok, bad, miss = 0, 0, 0
codes = {}
bad_sample = ""
VALUE = nil

function init(args)
  math.randomseed(SEED + (id or 0) * 7919)
  VALUE = make_value(VALUE_SIZE)
  if workload_init then workload_init() end
end

function count(is_ok, status, body, is_miss)
  if is_ok then
    ok = ok + 1
    if is_miss then miss = miss + 1 end
  else
    bad = bad + 1
    local k = tostring(status)
    codes[k] = (codes[k] or 0) + 1
    if bad_sample == "" and body then bad_sample = string.sub(body, 1, 200) end
  end
end

-- ---------------------------------------------------------------- done phase (main state)
local function json_string(s)
  s = tostring(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local t_ok, t_bad, t_miss = 0, 0, 0
  local all_codes = {}
  local sample = ""
  for _, thread in ipairs(threads) do
    t_ok = t_ok + (thread:get("ok") or 0)
    t_bad = t_bad + (thread:get("bad") or 0)
    t_miss = t_miss + (thread:get("miss") or 0)
    local c = thread:get("codes") or {}
    for k, v in pairs(c) do all_codes[k] = (all_codes[k] or 0) + v end
    local s = thread:get("bad_sample") or ""
    if sample == "" then sample = s end
  end
  local parts = {}
  local function add(k, v) parts[#parts + 1] = json_string(k) .. ":" .. v end
  add("duration_us", string.format("%d", summary.duration))
  add("requests", string.format("%d", summary.requests))
  add("bytes", string.format("%d", summary.bytes))
  add("err_connect", string.format("%d", summary.errors.connect))
  add("err_read", string.format("%d", summary.errors.read))
  add("err_write", string.format("%d", summary.errors.write))
  add("err_status", string.format("%d", summary.errors.status))
  add("err_timeout", string.format("%d", summary.errors.timeout))
  add("ok", string.format("%d", t_ok))
  add("bad", string.format("%d", t_bad))
  add("miss", string.format("%d", t_miss))
  local cp = {}
  for k, v in pairs(all_codes) do cp[#cp + 1] = json_string(k) .. ":" .. string.format("%d", v) end
  add("bad_codes", "{" .. table.concat(cp, ",") .. "}")
  add("bad_sample", json_string(sample))
  add("lat_min_us", string.format("%d", latency.min))
  add("lat_max_us", string.format("%d", latency.max))
  add("lat_mean_us", string.format("%.1f", latency.mean))
  add("lat_stdev_us", string.format("%.1f", latency.stdev))
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    add("lat_p" .. tostring(p) .. "_us", string.format("%d", latency:percentile(p)))
  end
  add("threads", string.format("%d", #threads))
  io.write("WRKJSON {" .. table.concat(parts, ",") .. "}\n")
end
