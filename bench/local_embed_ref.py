"""Reference throughput of all-MiniLM-L6-v2 embeddings with sentence-transformers (PyTorch, CPU).

Run from the repository root (the venv comes from bench/local-ref-env.sh):

    HF_HUB_OFFLINE=1 "$(bench/local-ref-env.sh)" bench/local_embed_ref.py \
        target/models/all-MiniLM-L6-v2 --sentences 512 --corpus-out target/embed-corpus.json

Prints one JSON line:
    {"engine": "sentence-transformers", "torch": ..., "threads": ..., "batch1_sps": ...,
     "batch32_sps": ..., ...}

(a) batch1_sps: each sentence encoded alone, in turn (`model.encode([s])`), sentences/second;
(b) batch32_sps: `model.encode(corpus, batch_size=32)` (sentence-transformers sorts the texts by
    length before batching and pads each batch to its longest text), sentences/second.
Both follow a warm-up of a few encodes. Without --seconds each is one pass over the corpus;
with --seconds S each is repeated (batch1 cycling through the corpus, batch32 whole passes, at
least one) until S seconds have passed, and the rate is over all the work done.

The corpus: N sentences from random.Random(SEED) (SEED = 20261201) over WORDS below; each
sentence has rng.randint(8, 40) words, each rng.choice(WORDS), joined by single spaces, first
letter capitalised and a "." appended. Another engine should not re-implement Python's
Mersenne Twister: write the corpus with --corpus-out PATH (a JSON list of strings) and read that
file, or pass --corpus-in PATH here to benchmark a corpus from elsewhere.
"""

import argparse
import json
import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SEED = 20261201
WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "more can said who what about out up them some could into than its time only new other may "
    "people two after first also any these well years way work over such where most through "
    "gateway request response token model provider latency cache budget limit route retry stream "
    "embedding vector server client network timeout error status header payload queue worker "
    "river bridge mountain forest garden window kitchen letter market winter summer morning "
    "evening yellow purple quickly slowly carefully bright quiet heavy simple ancient modern "
    "computer language science history music theory energy system process service "
    "2024 42 3.14 100 7 HTTP JSON API CPU GPU Rust Python café naïve résumé"
).split()


def make_corpus(n, seed=SEED):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(8, 40)
        words = [rng.choice(WORDS) for _ in range(k)]
        s = " ".join(words)
        out.append(s[0].upper() + s[1:] + ".")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--sentences", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=None,
                    help="repeat each measurement for at least this long")
    ap.add_argument("--corpus-out", help="write the corpus here (JSON list of strings)")
    ap.add_argument("--corpus-in", help="read the corpus from here instead of generating it")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args()

    if args.corpus_in:
        with open(args.corpus_in, encoding="utf-8") as f:
            corpus = json.load(f)
        assert isinstance(corpus, list) and all(isinstance(s, str) for s in corpus)
    else:
        corpus = make_corpus(args.sentences)
    if args.corpus_out:
        with open(args.corpus_out, "w", encoding="utf-8") as f:
            json.dump(corpus, f, ensure_ascii=False)

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model_dir, device="cpu")
    model.eval()
    n = len(corpus)
    tokens = [int(model.preprocess([s])["attention_mask"].sum()) for s in corpus]

    load_before = os.getloadavg()[0]

    # Warm-up.
    for s in corpus[:8]:
        model.encode([s], show_progress_bar=False)
    model.encode(corpus[:64], batch_size=32, show_progress_bar=False)

    with torch.inference_mode():
        # (a) batch 1
        done = 0
        t0 = time.perf_counter()
        while True:
            model.encode([corpus[done % n]], show_progress_bar=False)
            done += 1
            el = time.perf_counter() - t0
            if done >= n and (args.seconds is None or el >= args.seconds):
                break
        batch1_sps = done / el

        # (b) batch 32
        passes = 0
        t0 = time.perf_counter()
        while True:
            emb = model.encode(corpus, batch_size=32, show_progress_bar=False)
            passes += 1
            el32 = time.perf_counter() - t0
            if args.seconds is None or el32 >= args.seconds:
                break
        assert emb.shape == (n, 384)
        batch32_sps = passes * n / el32

    print(json.dumps({
        "engine": "sentence-transformers",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch1_sps": round(batch1_sps, 2),
        "batch32_sps": round(batch32_sps, 2),
        "sentence_transformers": sentence_transformers.__version__,
        "sentences": n,
        "mean_tokens": round(sum(tokens) / n, 2),
        "batch1_seconds": round(el, 3),
        "batch32_seconds": round(el32, 3),
        "batch32_passes": passes,
        # 1-minute load average before and after: other work on the machine skews the figures.
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }))


if __name__ == "__main__":
    sys.exit(main())
