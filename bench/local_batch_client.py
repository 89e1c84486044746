"""Concurrent chat streams against an OpenAI-compatible server (sluice or llama-server).

Each of `--clients` threads sends its share of `--requests` chat completions one after the
other: a unique prompt (so no server reuses another request's prompt), greedy, `ignore_eos`,
`--tokens` completion tokens each. Prints one JSON line: aggregate generated tokens per second
(all completion tokens over the wall time of the run), the mean per-stream rate, and the
completion tokens counted (from the answers' usage).
"""
import argparse
import json
import threading
import time
import urllib.request

TOPICS = ["rivers", "mountains", "bread", "clocks", "ships", "gardens", "bridges", "stars",
          "violins", "deserts", "trains", "bees", "maps", "glass", "forests", "kites"]


def ask(url, model, i, tokens):
    prompt = (f"Request {i}: write a long, detailed essay about {TOPICS[i % len(TOPICS)]}, "
              f"their history and how people use them today.")
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": False,
    }).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        answer = json.load(r)
    took = time.perf_counter() - start
    return answer["usage"]["completion_tokens"], answer["usage"]["prompt_tokens"], took


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--label", default="")
    a = p.parse_args()
    results, errors = [], []
    lock = threading.Lock()
    per_client = max(1, a.requests // a.clients)

    def client(c):
        for k in range(per_client):
            try:
                r = ask(a.url, a.model, c * per_client + k, a.tokens)
                with lock:
                    results.append(r)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(e))

    ask(a.url, a.model, 999, 8)  # warm-up: the model loaded, the first pages touched
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = sum(r[0] for r in results)
    print(json.dumps({
        "label": a.label,
        "clients": a.clients,
        "requests": len(results),
        "errors": len(errors),
        "completion_tokens": tokens,
        "prompt_tokens_mean": sum(r[1] for r in results) / max(1, len(results)),
        "aggregate_tok_s": round(tokens / wall, 1),
        "per_stream_tok_s": round(sum(r[0] / r[2] for r in results) / max(1, len(results)), 1),
        "wall_s": round(wall, 2),
    }), flush=True)


if __name__ == "__main__":
    main()
