-- wrk script for benches/load/run.sh: spreads requests over the paths listed in the file
-- $LOAD_PATHS (one a line), each with the header "Cookie: $LOAD_COOKIE" when that is set,
-- and ends with one machine-readable line:
-- RESULT requests=.. duration_us=.. p50_us=.. p99_us=.. connect=.. read=.. write=.. status=.. timeout=..
local prepared = {}
local next_index = 0

function init(args)
   local cookie = os.getenv("LOAD_COOKIE")
   local headers = {}
   if cookie and cookie ~= "" then headers["Cookie"] = cookie end
   local file = os.getenv("LOAD_PATHS") or error("LOAD_PATHS is not set")
   for path in io.lines(file) do
      if path ~= "" then prepared[#prepared + 1] = wrk.format("GET", path, headers) end
   end
   if #prepared == 0 then error("no paths in " .. file) end
end

function request()
   next_index = next_index % #prepared + 1
   return prepared[next_index]
end

function done(summary, latency, _)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect, e.read, e.write, e.status, e.timeout))
end
