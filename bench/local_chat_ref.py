#!/usr/bin/env python3
"""Chat generation speed of llama.cpp (through llama-cpp-python) on one GGUF file: the reference
for sluice-local's `chat_bench` example (crates/sluice-local/examples/chat_bench.rs).

Same user message, the file's own chat template rendered the way sluice renders it (Jinja,
trim_blocks + lstrip_blocks, as transformers does), greedy decoding, one sequence, exactly --gen
tokens: the end-of-generation tokens are masked out of the logits before each argmax, which is
llama.cpp's `ignore_eos`. Prints one JSON line in chat_bench's shape.

Timing: the load (Llama(...)) on its own, then a warm-up of 8 tokens (warmup_ms); then each run is the prompt forward + one
greedy pick (prefill) and then gen - 1 single-token forwards + picks (gen). Medians over --runs.

Usage (after bench/local-llama-env.sh):
  target/bench-llama-env/bin/python bench/local_chat_ref.py --file X.gguf [--gen 128] [--runs 3]
      [--ctx 1024] [--threads 2] [--batch 512] [--no-mmap]
"""

import argparse
import ctypes
import json
import statistics
import time

import jinja2.sandbox
import llama_cpp
import numpy as np
from llama_cpp import Llama

# The same text as PROMPT in crates/sluice-local/examples/chat_bench.rs.
PROMPT = (
    "You are reviewing the design of a small HTTP gateway that forwards chat "
    "completion requests to several upstream model providers. It keeps per-key rate limits, a "
    "response cache and a cost ledger, and it can also run small local models. Explain, in a few "
    "short paragraphs, which parts of such a gateway are most likely to become a bottleneck under "
    "heavy load, how you would measure each of them, and what you would change first."
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", required=True)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--no-mmap", action="store_true")
    args = ap.parse_args()

    started = time.perf_counter()
    llm = Llama(
        model_path=args.file,
        n_ctx=args.ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_batch=args.batch,
        n_ubatch=args.batch,
        use_mmap=not args.no_mmap,
        verbose=False,
    )
    load_ms = (time.perf_counter() - started) * 1e3

    vocab = llm._model.vocab
    n_vocab = llm.n_vocab()
    eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]

    def piece(token: int) -> str:
        return llm._model.token_get_text(token) if token >= 0 else ""

    template = llm.metadata["tokenizer.chat_template"]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    prompt = env.from_string(template).render(
        messages=[{"role": "user", "content": PROMPT}],
        add_generation_prompt=True,
        bos_token=piece(llm.token_bos()),
        eos_token=piece(llm.token_eos()),
    )
    prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    if add_bos and prompt_ids[:1] != [llm.token_bos()]:
        prompt_ids.insert(0, llm.token_bos())

    def pick() -> int:
        logits = np.ctypeslib.as_array(
            ctypes.cast(llm._ctx.get_logits_ith(-1), ctypes.POINTER(ctypes.c_float)),
            shape=(n_vocab,),
        )
        logits[eog] = -np.inf  # ignore_eos
        return int(np.argmax(logits))

    def run(gen: int):
        t0 = time.perf_counter()
        llm.reset()
        llm.eval(prompt_ids)
        tokens = [pick()]
        t1 = time.perf_counter()
        while len(tokens) < gen:
            llm.eval([tokens[-1]])
            tokens.append(pick())
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, tokens

    started = time.perf_counter()
    run(8)  # warm-up
    warmup_ms = (time.perf_counter() - started) * 1e3
    prefill, decode = [], []
    for _ in range(args.runs):
        first, rest, tokens = run(args.gen)
        assert len(tokens) == args.gen
        prefill.append(len(prompt_ids) / first)
        decode.append((args.gen - 1) / rest)

    print(
        json.dumps(
            {
                "engine": "llama.cpp",
                "version": f"llama-cpp-python {llama_cpp.__version__}",
                "file": args.file,
                "threads": args.threads,
                "load_ms": round(load_ms, 1),
                "warmup_ms": round(warmup_ms, 1),
                "prompt_tokens": len(prompt_ids),
                "prefill_tps": round(statistics.median(prefill), 2),
                "gen_tokens": args.gen,
                "gen_tps": round(statistics.median(decode), 2),
                "runs": args.runs,
                "first_ids": tokens[:8],
            }
        )
    )


if __name__ == "__main__":
    main()
