"""Builds the cross-encoder (reranker) test fixtures of sluice-local and their reference scores.

Writes, under crates/sluice-local/tests/fixtures/cross-encoder/:

* `sigmoid/` and `identity/`: sentence-transformers `CrossEncoder` directories (saved by
  `CrossEncoder.save_pretrained`) around a random `BertForSequenceClassification` with one
  label: tiny dimensions, weights drawn with a fixed seed and scaled up from BERT's 0.02
  initialisation so that different pairs get clearly different scores. `sigmoid/` keeps the
  default activation sentence-transformers picks for one label (`Sigmoid`); `identity/` was
  saved with `activation_fn=torch.nn.Identity()` (raw logits).
* `reference.json`: for each directory, the scores `CrossEncoder(dir).predict(pairs)` gives
  (the directory loaded back from disk, as a user would) and the token count of each pair as
  the model saw it (`[CLS] query [SEP] document [SEP]`, `longest_first` truncation).

The vocabulary (in each `tokenizer.json`) is all-MiniLM-L6-v2's `vocab.txt` reduced (Apache-2.0,
see `NOTICE` and `LICENSE-Apache-2.0` beside the fixtures): the special tokens, every single
character, the first words of the list (the most frequent) and the one-character `##`
continuations, so every text still tokenizes. Reduced so the fixture stays small; the tokenizer
is the real model's kind (uncased BERT WordPiece), and both sides run the same `tokenizer.json`.

The Rust tests (crates/sluice-local/tests/rerank.rs) load the directories and compare; they
need no Python. Regenerate, from the repository root, with a venv holding sentence-transformers
(made with `python3 -m venv /tmp/ce-venv && /tmp/ce-venv/bin/pip install torch==2.15.0
sentence-transformers==6.2.0`) and all-MiniLM-L6-v2 installed by `scripts/install-minilm.sh
target/models`:

    /tmp/ce-venv/bin/python scripts/make-cross-encoder-fixture.py target/models/all-MiniLM-L6-v2
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import sentence_transformers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import CrossEncoder  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast  # noqa: E402

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "crates",
    "sluice-local",
    "tests",
    "fixtures",
    "cross-encoder",
)

# Words kept from the frequency-ordered part of the vocabulary (ids 1996 on in MiniLM's).
WORDS = 1200
# Tokens the tokenizer keeps per pair; below `max_position_embeddings` so that the cap comes
# from the tokenizer's `model_max_length`, as for real cross-encoders.
MAX_LENGTH = 96
SEED = 20260509

LONG_DOCUMENT = " ".join(
    f"Paragraph {i} of a long report on canal locks, sluice gates and the water levels they keep."
    for i in range(1, 25)
)
LONG_QUERY = " ".join(
    f"question part {i}: which gate opens first when the river rises above the weir?"
    for i in range(1, 12)
)

REQUESTS = [
    # short pairs
    (
        "What is a sluice?",
        [
            "A sluice is a water channel controlled at its head by a gate.",
            "Bananas are rich in potassium.",
            "sluice",
        ],
    ),
    # a long document truncated against a short query
    ("How do canal locks work?", [LONG_DOCUMENT, "Locks raise and lower boats between levels."]),
    # both long: longest_first cuts the longer side first, then alternates
    (LONG_QUERY, [LONG_DOCUMENT, "The weir overflows first.", LONG_QUERY]),
    # unicode: accents (precomposed and combining), CJK, Korean, emoji, mixed case
    (
        "Café Déjà Vu à Zürich?",
        [
            "Café Déjà Vu: a naïve CRÈME BRÛLÉE at the Hôtel Ångström, cafe\u0301 cre\u0300me",
            "我爱自然语言处理。東京は日本の首都です。",
            "한국어 문장도 있습니다. 👍🏽 👨‍👩‍👧 ❤️",
            "HeLLo WoRLD",
        ],
    ),
    # empty and blank documents are scored like any other
    ("empty documents", ["", "   ", "\t\n"]),
    # many documents for one query: more than a batch of 32
    (
        "Which river has the most sluices?",
        [
            f"Document {i}: the {['Rhine', 'Thames', 'Danube', 'Seine', 'Elbe'][i % 5]} has "
            f"{i * 7 % 31} sluices and {i % 4} weirs along {i * 13 % 97} kilometres."
            for i in range(45)
        ],
    ),
]


def reduced_vocab(minilm_dir: str) -> list[str]:
    with open(os.path.join(minilm_dir, "vocab.txt"), encoding="utf-8") as f:
        full = f.read().splitlines()
    first_word = full.index("the")
    kept = []
    for i, token in enumerate(full):
        if token.startswith("[unused"):
            continue
        special = token.startswith("[") and token.endswith("]") and i < first_word
        single = i < first_word
        word = first_word <= i < first_word + WORDS and not token.startswith("##")
        suffix = token.startswith("##") and len(token) == 3
        if special or single or word or suffix:
            kept.append(token)
    return kept


def randomise(model: torch.nn.Module) -> None:
    """BERT's initialisation scaled up, so the tiny model's scores spread out."""
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            else:
                p.copy_(0.6 * noise)


def build(base: str, tokens: list[str]) -> None:
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    assert tokenizer.vocab_size == len(tokens), tokenizer.vocab_size
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=128,
        num_labels=1,
        architectures=["BertForSequenceClassification"],
    )
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config)
    randomise(model)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)


def save(base: str, out: str, activation) -> None:
    kwargs = {"max_length": MAX_LENGTH}
    if activation is not None:
        kwargs["activation_fn"] = activation
    CrossEncoder(base, device="cpu", **kwargs).save_pretrained(out)


def reference(out: str) -> dict:
    model = CrossEncoder(out, device="cpu")
    pairs = [(q, d) for q, docs in REQUESTS for d in docs]
    scores = model.predict(pairs, batch_size=32, convert_to_numpy=True).tolist()
    max_length = model.max_seq_length
    # What `predict` feeds the model, one pair at a time (no padding). Not `tokenizer(q, d)`:
    # called on one pair, the tokenizer drops an empty document (`""` is no pair), which the
    # batched call `predict` makes does not.
    tokens = [int(model.preprocess([pair])["attention_mask"].sum()) for pair in pairs]
    requests, at = [], 0
    for query, docs in REQUESTS:
        n = len(docs)
        requests.append(
            {
                "query": query,
                "documents": docs,
                "scores": [float(f"{s:.8g}") for s in scores[at : at + n]],
                "tokens": tokens[at : at + n],
            }
        )
        at += n
    return {
        "activation": type(model.activation_fn).__name__,
        "max_seq_length": max_length,
        "requests": requests,
    }


def main() -> None:
    minilm = sys.argv[1] if len(sys.argv) > 1 else "target/models/all-MiniLM-L6-v2"
    os.makedirs(OUT, exist_ok=True)
    tokens = reduced_vocab(minilm)
    result = {
        "made_with": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory() as base:
        build(base, tokens)
        for name, activation in (("sigmoid", None), ("identity", torch.nn.Identity())):
            out = os.path.join(OUT, name)
            save(base, out, activation)
            # The model card sentence-transformers writes describes a trained model; this is not.
            os.remove(os.path.join(out, "README.md"))
            result["models"][name] = reference(out)
    with open(os.path.join(OUT, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for name, model in result["models"].items():
        flat = [s for r in model["requests"] for s in r["scores"]]
        print(f"{name}: {model['activation']}, {len(flat)} scores in [{min(flat):.4f}, {max(flat):.4f}]")


if __name__ == "__main__":
    main()
