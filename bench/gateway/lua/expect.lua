-- For the modes whose correct answer is a refusal (deny: 403, unauth: 401). One token: a static request,
-- as single.lua (no Lua per request); several: pre-formatted requests rotated round-robin, as rotate.lua.
-- wrk's own counter only tells >= 400 from the rest, so response() counts every status: the report shows
-- the mix (a 401 step-up challenge or a 429 among the expected 403s), and the harness counts answers
-- outside the expected class as errors. That costs wrk a Lua call per response (wrk's core, not the SUT's).
local toks = {}
for tok in io.lines(os.getenv("GWB_TOKEN_FILE")) do
  if #tok > 0 then toks[#toks + 1] = tok end
end
wrk.method = "GET"
wrk.headers["Accept"] = "application/json"
if #toks == 1 then
  wrk.headers["Authorization"] = "Bearer " .. toks[1]
else
  local reqs, n, i = {}, 0, 0
  -- Built in init() (per wrk thread), after wrk has set the Host header.
  function init(args)
    for _, tok in ipairs(toks) do
      reqs[#reqs + 1] = wrk.format("GET", nil, { ["Host"] = wrk.headers["Host"], ["Authorization"] = "Bearer " .. tok, ["Accept"] = "application/json" })
    end
    n = #reqs
  end
  function request()
    i = i + 1
    if i > n then i = 1 end
    return reqs[i]
  end
end

-- A global of each thread's Lua state (status -> count), read from the main state in done().
statuses = {}

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do all[s] = (all[s] or 0) + n end
  end
  local parts = {}
  for s, n in pairs(all) do parts[#parts + 1] = string.format('"%d":%d', s, n) end
  io.write(string.format(
    'GWB_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_p999_us":%d,"lat_max_us":%d,"lat_mean_us":%.1f,"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    table.concat(parts, ",")))
end
