-- wrk script for the 32-client embeddings run of bench/local.sh: one `/v1/embeddings` request
-- per sentence, taken in turn from BODIES (a file of request bodies, one per line, written by
-- bench/local.sh from the corpus), so the load generator costs a few microseconds of C per
-- request instead of a Python thread's share of the two cores.
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do
  bodies[#bodies + 1] = line
end
local next_body = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  next_body = next_body % #bodies + 1
  return wrk.format(nil, "/v1/embeddings", nil, bodies[next_body])
end

done = function(summary, latency, requests)
  io.write(string.format(
    '{"engine": "sluice-http-wrk", "requests": %d, "errors": %d, "seconds": %.3f, "sps": %.1f, "latency_ms_p50": %.2f, "latency_ms_p95": %.2f}\n',
    summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3,
    latency:percentile(95) / 1e3))
end
