"""Embedding throughput through a running sluice, over HTTP on loopback.

    python3 bench/local_embed_http.py http://127.0.0.1:PORT CORPUS.json --clients 32 --seconds 10

Each of `--clients` threads keeps one HTTP/1.1 connection and sends `/v1/embeddings`
requests of one sentence each (taken in turn from the corpus, a JSON list of strings written
by bench/local_embed_ref.py --corpus-out), as fast as answers come, for `--seconds`. Prints one
JSON line: clients, requests, sentences per second, latency p50 and p95 in ms. Standard
library only.
"""

import argparse
import http.client
import json
import threading
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("corpus")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    args = ap.parse_args()
    corpus = json.load(open(args.corpus))
    url = urllib.parse.urlparse(args.url)
    bodies = [json.dumps({"model": args.model, "input": [s]}).encode() for s in corpus]
    lock = threading.Lock()
    latencies = []
    next_index = [0]
    errors = [0]

    def client():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        mine = []
        # Warm-up request (loads the model on the first client).
        conn.request("POST", "/v1/embeddings", bodies[0], {"content-type": "application/json"})
        conn.getresponse().read()
        warmed.wait()
        go.wait()
        deadline = start[0] + args.seconds
        while time.perf_counter() < deadline:
            with lock:
                i = next_index[0] % len(bodies)
                next_index[0] += 1
            t = time.perf_counter()
            conn.request("POST", "/v1/embeddings", bodies[i], {"content-type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                with lock:
                    errors[0] += 1
                continue
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    start = [0.0]
    warmed = threading.Barrier(args.clients + 1)
    go = threading.Barrier(args.clients + 1)
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    warmed.wait()
    start[0] = time.perf_counter()
    go.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start[0]
    latencies.sort()

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3, 2) if latencies else None

    print(json.dumps({
        "engine": "sluice-http",
        "clients": args.clients,
        "requests": len(latencies),
        "errors": errors[0],
        "sps": round(len(latencies) / elapsed, 1),
        "latency_ms_p50": pct(0.5),
        "latency_ms_p95": pct(0.95),
    }))


if __name__ == "__main__":
    main()
