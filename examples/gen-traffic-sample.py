#!/usr/bin/env python3
"""Writes examples/traffic-sample.jsonl: 100,000 recorded requests over 30 days, averaging
500 tokens, 70% GPT-4o, 20% Claude 3.5 Sonnet, 10% Gemini Flash, each costed at a flat
$2.50, $3.00 and $0.075 per million tokens (input and output alike), as in the example
`sluice cost simulate` reproduces: 50M tokens, $87.50 + $30.00 + $0.375 = $117.88 a month.

Sizes come in pairs (500 - d, 500 + d) so every model's mean is exactly 500 tokens; a prompt
is 70% of a request, the completion the rest. Deterministic: the same file every run.
"""
import json
import os

REQUESTS = 100_000
DAYS = 30
START = 1_761_955_200  # 2025-11-01T00:00:00Z
MIX = [  # model, provider, share, USD per million tokens
    ("gpt-4o", "openai", 70, 2.50),
    ("claude-3-5-sonnet", "anthropic", 20, 3.00),
    ("gemini-1.5-flash", "gemini", 10, 0.075),
]

def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "traffic-sample.jsonl")
    state = 12345
    def rand(n):
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        return (state >> 33) % n
    # The model of each request, interleaved: 7 GPT-4o, 2 Claude, 1 Gemini per 10.
    pattern = [m for m in MIX for _ in range(m[2] // 10)]
    pending = {m[0]: None for m in MIX}
    with open(out, "w") as f:
        for i in range(REQUESTS):
            model, provider, _, price = pattern[i % len(pattern)]
            if pending[model] is None:
                d = rand(451)  # 0..450
                total, pending[model] = 500 - d, 500 + d
            else:
                total, pending[model] = pending[model], None
            prompt = total * 7 // 10
            record = {
                "ts": START + i * DAYS * 86400 // REQUESTS,
                "model": model,
                "provider": provider,
                "prompt_tokens": prompt,
                "completion_tokens": total - prompt,
                "cost_usd": round(total * price / 1e6, 12),
            }
            f.write(json.dumps(record, separators=(",", ":")) + "\n")

if __name__ == "__main__":
    main()
