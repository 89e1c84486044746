#!/usr/bin/env python3
"""Rebuilds fuzz/corpus/ from the conformance suite's goldens and transcripts, the config
examples and the README's TOML blocks (run from the repository root: python3 fuzz/seed.py).

Each target's directory holds one seed per file; the fuzz tests
(crates/sluice-server/tests/fuzz/) read them, mutate them and feed the results to the parser.
Hand-written seeds (names starting with `hand-`) are kept as they are.
"""
import pathlib
import re
import shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONF = ROOT / "crates/sluice-server/tests/conformance"
OUT = ROOT / "fuzz/corpus"


SEEN = set()


def put(target, name, data):
    """Writes a seed, unless the target already has one with the same bytes."""
    data = data if isinstance(data, bytes) else data.encode()
    if (target, data) in SEEN:
        return
    SEEN.add((target, data))
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def sections(text):
    """`## title` -> body of a golden."""
    parts = re.split(r"^## (.*)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip("\n") for i in range(1, len(parts), 2)}


def clear_generated():
    if OUT.exists():
        for d in OUT.iterdir():
            for f in d.iterdir():
                if not f.name.startswith("hand-"):
                    f.unlink()


# Inbound request bodies: the upstream request of a golden is a body in the upstream's own
# API, which is the inbound API of the same name (model renamed to the gateway's `m`).
INBOUND = {"openai": "chat", "anthropic": "messages", "openai_responses": "responses"}


def goldens():
    for path in sorted((CONF / "golden").glob("*/*/*.txt")):
        inbound, upstream, scenario = path.parts[-3], path.parts[-2], path.stem
        s = sections(path.read_text())
        for mode in ("whole", "stream"):
            req = s.get(f"{mode}: upstream request")
            target = INBOUND.get(upstream)
            if req and target:
                body = req.split("\n", 1)[1].replace('"up-model"', '"m"')
                put(target, f"{inbound}-{scenario}-{mode}.json", body)
        # What a client got: OpenAI chat answers (whole and streamed).
        if inbound == "chat":
            for title, body in s.items():
                if title.startswith("whole: answer, status 200"):
                    put("answer-openai", f"{upstream}-{scenario}.json", body)
                if title.startswith("stream: events, status 200"):
                    put("answer-openai-sse", f"{upstream}-{scenario}.sse", body + "\n\n")


def transcripts():
    kinds = {
        "openai": ("answer-openai", "answer-openai-sse"),
        "openai_responses": ("answer-responses", "answer-responses-sse"),
        "anthropic": ("answer-anthropic", "answer-anthropic-sse"),
        "gemini": ("answer-gemini", "answer-gemini-sse"),
        "ollama": ("answer-ollama", "answer-ollama-ndjson"),
    }
    for upstream, (whole, stream) in kinds.items():
        for path in sorted((CONF / "upstream" / upstream).iterdir()):
            name = path.name
            if ".whole." in name or ".error." in name:
                put(whole, f"upstream-{name}", path.read_bytes())
            else:
                put(stream, f"upstream-{name}", path.read_bytes())


def configs():
    for path in [ROOT / "deploy/sluice.toml", *sorted((ROOT / "examples").glob("*.toml"))]:
        put("config", f"file-{path.name}", path.read_bytes())
    readme = (ROOT / "README.md").read_text()
    for i, block in enumerate(re.findall(r"```toml\n(.*?)```", readme, flags=re.S)):
        put("config", f"readme-{i:03}.toml", block)


if __name__ == "__main__":
    clear_generated()
    goldens()
    transcripts()
    configs()
    for d in sorted(OUT.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")
