-- Used by bench/loadgen.py: stops a wrk thread after BENCH_MAX_REQUESTS responses (so a run is
-- bounded in count as well as in time) and prints one machine-readable result line.
local cap = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "2000000")
local seen = 0

function response(status, headers, body)
  seen = seen + 1
  if seen >= cap then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50.0), latency:percentile(99.0),
    e.connect + e.read + e.write + e.status + e.timeout))
end
