-- wrk script for the benchmark: GET / by default, or with BENCH_POST=<urlencoded form> a POST / of
-- that form as a browser sends it from the app's own page; prints the results as one JSON line
-- (status_errors: answers with a status of 400 or more, which wrk counts as errors).
if os.getenv("BENCH_POST") then
   wrk.method = "POST"
   wrk.body = os.getenv("BENCH_POST")
   wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
   wrk.headers["Sec-Fetch-Site"] = "same-origin"
   wrk.headers["Origin"] = "http://" .. wrk.host .. ":" .. wrk.port
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "seconds": %.6f, "status_errors": %d, "socket_errors": %d, ' ..
      '"p50_ms": %.3f, "p99_ms": %.3f}\n',
      summary.requests, summary.duration / 1e6, e.status,
      e.connect + e.read + e.write + e.timeout,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
