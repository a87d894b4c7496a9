-- wrk script: POST pre-signed webhooks, each with its own webhook-id, and count the answers.
--
-- Environment:
--   BENCH_DATA     tab-separated file: path, webhook-id, webhook-timestamp, webhook-signature, body
--   BENCH_THREADS  wrk's -t value; thread k sends lines k, k+T, k+2T, ... so no two threads share one
--   BENCH_OUT      done() writes a JSON summary here, and the event ids of 2xx answers to BENCH_OUT.ids

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("BENCH_THREADS"))
  reqs = {}
  local i = 0
  for line in io.lines(os.getenv("BENCH_DATA")) do
    if i % nthreads == tid then
      local path, id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", path, {
        ["content-type"] = "application/json",
        ["webhook-id"] = id,
        ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig,
      }, body)
    end
    i = i + 1
  end
  pos = 0
  sent = 0
  wrapped = 0
  s202 = 0
  s200 = 0
  other2xx = 0
  non2xx = 0
  ids = {}
end

function request()
  pos = pos + 1
  if pos > #reqs then
    pos = 1
    wrapped = wrapped + 1
  end
  sent = sent + 1
  return reqs[pos]
end

function response(status, headers, body)
  if status == 202 then
    s202 = s202 + 1
  elseif status == 200 then
    s200 = s200 + 1
  elseif status > 200 and status < 300 then
    other2xx = other2xx + 1
  else
    non2xx = non2xx + 1
    return
  end
  local id = body:match('"event_id":"([^"]+)"')
  if id then
    ids[#ids + 1] = id
  end
end

function done(summary, latency, requests)
  local out = os.getenv("BENCH_OUT")
  local totals = { sent = 0, wrapped = 0, s202 = 0, s200 = 0, other2xx = 0, non2xx = 0 }
  local idfile = io.open(out .. ".ids", "w")
  for _, thread in ipairs(threads) do
    for key, _ in pairs(totals) do
      totals[key] = totals[key] + (thread:get(key) or 0)
    end
    for _, id in ipairs(thread:get("ids") or {}) do
      idfile:write(id, "\n")
    end
  end
  idfile:close()
  local e = summary.errors
  local f = io.open(out, "w")
  f:write(string.format(
    '{"duration_us": %.0f, "requests": %.0f, "bytes": %.0f, ' ..
    '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}, ' ..
    '"latency_us": {"mean": %.1f, "stdev": %.1f, "max": %.0f, "p50": %.0f, "p90": %.0f, "p99": %.0f}, ' ..
    '"sent": %.0f, "wrapped": %.0f, "s202": %.0f, "s200": %.0f, "other2xx": %.0f, "non2xx": %.0f}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    totals.sent, totals.wrapped, totals.s202, totals.s200, totals.other2xx, totals.non2xx))
  f:close()
end
