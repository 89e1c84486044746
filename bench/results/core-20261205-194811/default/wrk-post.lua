wrk.method = "POST"
wrk.body = [==[{"model":"fake-model","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}]==]
wrk.headers[ [==[Content-Type]==] ] = [==[application/json]==]
wrk.headers[ [==[Authorization]==] ] = [==[Bearer sk-bench-1234]==]
done = function(s, lat, req)
  io.write(string.format("WRKRESULT {\"requests\":%d,\"duration_us\":%d,\"non2xx\":%d,\"errors\":%d,\"p50_us\":%d,\"p99_us\":%d}\n", s.requests, s.duration, s.errors.status, s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout, lat:percentile(50), lat:percentile(99)))
end
