-- Used by bench/keywalk.py: walks BENCH_KEYS distinct keys, BENCH_PREFIX .. "00000" onwards
-- (or from BENCH_START), with BENCH_METHOD: PUT sends a 200-byte JSON object per key, GET reads
-- it. It stops after BENCH_KEYS responses and ends wrk at once (so a run is bounded in count as
-- well as in time), then prints one machine-readable result line. One wrk thread (-t1).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *ts);
int getpid(void);
int kill(int pid, int sig);
]]

local CLOCK_MONOTONIC, SIGINT = 1, 2
local method = os.getenv("BENCH_METHOD") or "GET"
local prefix = os.getenv("BENCH_PREFIX") or "/"
local keys = tonumber(os.getenv("BENCH_KEYS") or "1000")
local first = tonumber(os.getenv("BENCH_START") or "0")
local body_size = tonumber(os.getenv("BENCH_BODY_SIZE") or "200")
local ts = ffi.new("bench_timespec")
local threads = {}

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

-- The same document bench/keywalk.py writes: {"n": i, "title": ..., "text": "xx…"}, padded so
-- that it is exactly body_size bytes.
local function document(i)
  local head = string.format('{"n":%d,"title":"document %05d","text":"', i, i)
  return head .. string.rep("x", body_size - #head - 2) .. '"}'
end

function setup(thread)
  table.insert(threads, thread)
end

sent, scheduled, seen, failed, started, finished = 0, 0, 0, 0, 0, 0
local headers = {}

function init(args)
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  if method == "PUT" then
    headers["Content-Type"] = "application/json"
  end
end

-- Called before each request: the first BENCH_KEYS go at once, any later one is parked for ten
-- minutes (wrk stops long before), so no key is written twice and no write is cut off.
function delay()
  if scheduled >= keys then
    return 600000
  end
  scheduled = scheduled + 1
  return 0
end

-- wrk also calls this once before the run, to check the script: that call (no delay() before
-- it) neither counts nor starts the clock.
function request()
  local i = first + sent
  if sent < scheduled then
    if started == 0 then
      started = now_us()
    end
    sent = sent + 1
  end
  local path = string.format("%s%05d", prefix, i)
  if method == "PUT" then
    return wrk.format("PUT", path, headers, document(i))
  end
  return wrk.format("GET", path, headers)
end

function response(status, hdrs, body)
  seen = seen + 1
  finished = now_us()
  if status >= 400 then
    failed = failed + 1
  end
  if seen == keys then
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), SIGINT) -- wakes wrk's main thread from its -d sleep
  end
end

function done(summary, latency, requests)
  local t = threads[1]
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\n", t:get("seen"),
    t:get("finished") - t:get("started"), latency:percentile(50.0), latency:percentile(99.0),
    t:get("failed") + e.connect + e.read + e.write + e.timeout))
end
