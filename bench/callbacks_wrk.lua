-- wrk script for bench/callbacks.py: posts every pre-signed callback of a request file exactly once.
--
--   wrk -t2 -c64 -d600s --latency -s bench/callbacks_wrk.lua http://127.0.0.1:PORT -- REQUESTS THREADS MARKER
--
-- REQUESTS: one callback per line, "path?query<TAB>signature<TAB>form body", written by bench/callbacks.py.
-- Thread n of THREADS posts lines n, n + THREADS, ... so every callback (distinct MessageSid and status) goes out
-- once. wrk only stops on its duration, so each thread notes the wall-clock time of its first request and of
-- its last expected answer, writes MARKER.n when done, and the bench interrupts wrk (SIGINT) once every thread
-- has: the rate is callbacks / (last answer - first request), and the summary is printed by `done`.
-- Once a thread has sent its share, its idle connections ask for a path both servers answer 404 (not counted),
-- spaced by `delay` so they cost next to nothing while the last answers arrive.

local ffi = require("ffi")
ffi.cdef([[
  typedef struct { long tv_sec; long tv_usec; } bench_timeval;
  int gettimeofday(bench_timeval *tv, void *tz);
]])
local timeval = ffi.new("bench_timeval")

local function now()
  ffi.C.gettimeofday(timeval, nil)
  return tonumber(timeval.tv_sec) + tonumber(timeval.tv_usec) / 1e6
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
  table.insert(threads, thread)
end

function init(args)
  local stride = tonumber(args[2])
  marker = args[3] .. "." .. id
  requests = {}
  local index = 0
  for line in io.lines(args[1]) do
    if index % stride == id - 1 then
      local path, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", path, {
        ["X-Twilio-Signature"] = signature,
        ["Content-Type"] = "application/x-www-form-urlencoded",
      }, body)
    end
    index = index + 1
  end
  filler = wrk.format("GET", "/bench-filler-not-a-route")
  sent = 0
  answered = 0
  expected = #requests
  statuses = {}
  started_at = 0
  finished_at = 0
  -- wrk calls `request` once on the first thread before starting, only to check what it returns: not sent.
  verifying = id == 1
end

function delay()
  if sent >= expected then
    return 200
  end
  return 0
end

function request()
  if verifying then
    verifying = false
    return requests[1]
  end
  if sent >= expected then
    return filler
  end
  if sent == 0 then
    started_at = now()
  end
  sent = sent + 1
  return requests[sent]
end

function response(status, headers, body)
  if status == 404 then
    return  -- a filler
  end
  statuses[status] = (statuses[status] or 0) + 1
  answered = answered + 1
  if answered == expected then
    finished_at = now()
    local file = io.open(marker, "w")
    file:write("done\n")
    file:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local answered_total, started, finished = 0, nil, nil
  local by_status = {}
  for _, thread in ipairs(threads) do
    answered_total = answered_total + thread:get("answered")
    local first, last = thread:get("started_at"), thread:get("finished_at")
    if started == nil or first < started then
      started = first
    end
    if finished == nil or last > finished then
      finished = last
    end
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(by_status) do
    parts[#parts + 1] = string.format('"%d": %d', status, count)
  end
  io.write(string.format(
    'BENCH_RESULT {"answered": %d, "seconds": %.6f, "p50_ms": %.3f, "p99_ms": %.3f, "statuses": {%s}}\n',
    answered_total, finished - started, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    table.concat(parts, ", ")
  ))
end
