#!/usr/bin/env python3
"""What llama.cpp's grammar sampling (through llama-cpp-python) costs per generated token on one
GGUF file, against its unconstrained decoding of the same prompt: the reference for
sluice-local's `constrained_bench` example (crates/sluice-local/examples/constrained_bench.rs),
whose prompt and JSON schema it reads (`constrained_bench --print-setup`, one JSON line).

The grammar is llama.cpp's own for the schema (`LlamaGrammar.from_json_schema`). Both ways run
the same loop through llama.cpp's sampler chain, greedy, one sequence: one forward of the
prompt, then single-token forwards, each followed by `llama_sampler_sample` (which applies the
chain to the logits and accepts the token). Unconstrained: end-of-generation tokens biased
out (llama.cpp's `ignore_eos`), exactly --gen tokens. Constrained: the grammar sampler first
in the chain, until the grammar lets only an end-of-generation token through (or 1500 tokens).
The decode step is the time after the first token divided by the further tokens; the sampler
alone is timed too (its share of the step). Medians over --runs. Prints one JSON line.

Usage (after bench/local-llama-env.sh):
  target/release/examples/constrained_bench --print-setup > setup.json
  target/bench-llama-env/bin/python bench/local_constrained_ref.py --file X.gguf --setup setup.json
      [--gen 128] [--runs 3] [--threads 2]
"""

import argparse
import json
import statistics
import time

import jinja2.sandbox
import llama_cpp
from llama_cpp import Llama, LlamaGrammar
from llama_cpp._internals import LlamaSampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", required=True)
    ap.add_argument("--setup", required=True)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with open(args.setup) as f:
        setup = json.load(f)

    llm = Llama(
        model_path=args.file,
        n_ctx=args.ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    vocab = llm._model.vocab
    n_vocab = llm.n_vocab()
    eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]

    def piece(token: int) -> str:
        return llm._model.token_get_text(token) if token >= 0 else ""

    template = llm.metadata["tokenizer.chat_template"]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    prompt = env.from_string(template).render(
        messages=[{"role": "user", "content": setup["prompt"]}],
        add_generation_prompt=True,
        bos_token=piece(llm.token_bos()),
        eos_token=piece(llm.token_eos()),
    )
    prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    if add_bos and prompt_ids[:1] != [llm.token_bos()]:
        prompt_ids.insert(0, llm.token_bos())
    grammar = LlamaGrammar.from_json_schema(json.dumps(setup["schema"]), verbose=False)

    def sampler(constrained: bool) -> LlamaSampler:
        s = LlamaSampler()
        if constrained:
            s.add_grammar(llm._model, grammar)
        else:
            s.add_logit_bias(n_vocab, {t: float("-inf") for t in eog})
        s.add_greedy()
        return s

    def run(constrained: bool, gen: int):
        s = sampler(constrained)
        llm.reset()
        llm._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        llm.eval(prompt_ids)
        tokens = [s.sample(llm._ctx, -1)]
        t1 = time.perf_counter()
        sampling = 0.0
        while len(tokens) < gen and tokens[-1] not in eog:
            llm.eval([tokens[-1]])
            ts = time.perf_counter()
            tokens.append(s.sample(llm._ctx, -1))
            sampling += time.perf_counter() - ts
        t2 = time.perf_counter()
        if tokens[-1] in eog:
            tokens.pop()
        further = max(len(tokens) - 1, 1)
        s.close()
        return (t2 - t1) / further, sampling / further, tokens

    run(False, 8)  # warm-up
    free, free_sample, constrained, constrained_sample = [], [], [], []
    answer = []
    for _ in range(args.runs):
        step, sample, tokens = run(False, args.gen)
        assert len(tokens) == args.gen
        free.append(step)
        free_sample.append(sample)
        step, sample, answer = run(True, 1500)
        constrained.append(step)
        constrained_sample.append(sample)
    text = llm.detokenize(answer).decode("utf-8", errors="replace")
    try:
        json.loads(text)
        parses = True
    except ValueError:
        parses = False
    ms = lambda xs: round(statistics.median(xs) * 1e3, 2)  # noqa: E731
    us = lambda xs: round(statistics.median(xs) * 1e6, 1)  # noqa: E731
    print(
        json.dumps(
            {
                "engine": "llama.cpp",
                "version": f"llama-cpp-python {llama_cpp.__version__}",
                "file": args.file,
                "threads": args.threads,
                "runs": args.runs,
                "prompt_tokens": len(prompt_ids),
                "free_step_ms": ms(free),
                "constrained_step_ms": ms(constrained),
                "constrained_tokens": len(answer),
                "step_ratio": round(statistics.median(constrained) / statistics.median(free), 3),
                "sample_free_us": us(free_sample),
                "sample_constrained_us": us(constrained_sample),
                "grammar_us_per_token": round(
                    (statistics.median(constrained_sample) - statistics.median(free_sample)) * 1e6, 1
                ),
                "grammar_share_of_step": round(
                    (statistics.median(constrained_sample) - statistics.median(free_sample))
                    / statistics.median(free),
                    4,
                ),
                "parses": parses,
                "answer": text,
            }
        )
    )


if __name__ == "__main__":
    main()
