#!/usr/bin/env python3
"""The official Python SDKs, unmodified, against the gateway: `openai` for
chat completions, legacy completions, embeddings, the Responses API and the
model list; `anthropic` for Messages (whole and streamed), token counting, its
errors and its model list.

The gateway runs from a configuration file over three `llm-sim` providers:
an OpenAI-style primary that fails every other call (503), a healthy
backup, and an Anthropic-protocol provider that is overloaded (529) every
fourth call (it has no backup: at one call in two its breaker would open).
The SDKs' own retries are off (`max_retries=0`), so every answer they get
is the gateway's doing.

    python3 -m venv /tmp/sdk-venv && /tmp/sdk-venv/bin/pip install openai anthropic
    cargo build -p tower-llm-gateway -p tower-llm-testkit --bins
    /tmp/sdk-venv/bin/python crates/tower-llm-gateway/scripts/official_sdks.py

Options: `--bin-dir DIR` (default: target/debug beside this repository).
Prints one line per check and `N passed, N failed`; exits 1 on a failure.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CLAUDE_KEY = "sk-ant-sim-claude"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def start(processes, argv, env=None):
    processes.append(
        subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )


def config(primary, backup, claude, listen):
    return f"""
preset = "high_availability"

[gateway]
listen = "127.0.0.1:{listen}"

[[targets]]
name = "primary"
base_url = "http://127.0.0.1:{primary}/v1"

[[targets]]
name = "backup"
base_url = "http://127.0.0.1:{backup}/v1"
model = "llama3.2"

[[targets]]
name = "claude"
provider = "anthropic"
protocol = "anthropic"
base_url = "http://127.0.0.1:{claude}/v1"
api_key_env = "SIM_CLAUDE_KEY"

[[routes]]
model = "claude-*"
targets = ["claude", "backup"]

[[routes]]
model = "*"
targets = ["primary", "backup"]
"""


def checks(base):
    import anthropic
    import openai

    oa = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-caller", max_retries=0)
    an = anthropic.Anthropic(base_url=base, api_key="sk-caller", max_retries=0)
    say = [{"role": "user", "content": "Say hello"}]

    def chat_whole():
        r = oa.chat.completions.create(model="gpt-4o", messages=say)
        assert r.choices[0].message.content, r
        return r.choices[0].message.content

    def chat_stream():
        text = "".join(
            c.choices[0].delta.content or ""
            for c in oa.chat.completions.create(model="gpt-4o", messages=say, stream=True)
            if c.choices
        )
        assert text
        return text

    def completions_whole():
        r = oa.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello")
        assert r.choices[0].text
        return r.choices[0].text

    def completions_stream():
        text = "".join(
            c.choices[0].text
            for c in oa.completions.create(
                model="gpt-3.5-turbo-instruct", prompt="Say hello", stream=True
            )
            if c.choices
        )
        assert text
        return text

    def embeddings_batch():
        # The SDK asks for base64 and decodes it.
        r = oa.embeddings.create(
            model="text-embedding-3-small", input=["one", "two", "one"], dimensions=8
        )
        vectors = [d.embedding for d in r.data]
        assert len(vectors) == 3 and all(len(v) == 8 for v in vectors), r
        assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
        return f"{len(vectors)} vectors of {len(vectors[0])}"

    def responses_whole():
        r = oa.responses.create(model="gpt-4o", input="Say hello")
        assert r.output_text, r
        return r.output_text

    def responses_stream():
        text, last = "", None
        for event in oa.responses.create(model="gpt-4o", input="Say hello", stream=True):
            if event.type == "response.output_text.delta":
                text += event.delta
            last = event.type
        assert text and last == "response.completed", (text, last)
        return text

    def openai_models():
        ids = [m.id for m in oa.models.list()]
        assert ids == ["claude-*", "*"], ids
        return ", ".join(ids)

    def openai_model_retrieve():
        m = oa.models.retrieve("gpt-4o")
        assert m.id == "gpt-4o" and m.owned_by == "primary", m
        return m.id

    def messages_whole():
        r = an.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=say)
        assert r.content[0].text, r
        return r.content[0].text

    def messages_stream():
        with an.messages.stream(
            model="claude-sonnet-4-5", max_tokens=256, messages=say
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text and final.stop_reason, final
        return text

    def messages_count_tokens():
        r = an.messages.count_tokens(model="claude-sonnet-4-5", messages=say)
        assert r.input_tokens > 0, r
        return r.input_tokens

    def messages_error():
        # No Anthropic-protocol target serves `gpt-4o`: the SDK reads the
        # gateway's Anthropic-shaped 404.
        try:
            an.messages.create(model="gpt-4o", max_tokens=16, messages=say)
        except anthropic.NotFoundError as e:
            assert e.body["error"]["type"] == "not_found_error", e.body
            assert e.response.headers["x-should-retry"] == "false"
            return f"NotFoundError: {e.body['error']['type']}"
        raise AssertionError("no error")

    def anthropic_models():
        ids = [m.id for m in an.models.list()]
        assert ids == ["claude-*", "*"], ids
        return ", ".join(ids)

    def anthropic_model_retrieve():
        m = an.models.retrieve("claude-sonnet-4-5")
        assert m.id == "claude-sonnet-4-5", m
        return m.id

    return [
        ("openai chat.completions whole", chat_whole),
        ("openai chat.completions stream", chat_stream),
        ("openai completions whole", completions_whole),
        ("openai completions stream", completions_stream),
        ("openai embeddings batch", embeddings_batch),
        ("openai responses whole", responses_whole),
        ("openai responses stream", responses_stream),
        ("openai models.list", openai_models),
        ("openai models.retrieve", openai_model_retrieve),
        ("anthropic messages whole", messages_whole),
        ("anthropic messages stream", messages_stream),
        ("anthropic messages.count_tokens", messages_count_tokens),
        ("anthropic messages error", messages_error),
        ("anthropic models.list", anthropic_models),
        ("anthropic models.retrieve", anthropic_model_retrieve),
    ]


def main():
    repo = Path(__file__).resolve().parents[3]
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", default=str(repo / "target" / "debug"))
    args = parser.parse_args()
    bins = Path(args.bin_dir)
    primary, backup, claude, listen = (free_port() for _ in range(4))
    processes = []
    try:
        sim = [str(bins / "llm-sim"), "--quiet"]
        start(processes, sim + ["--port", str(primary), "--faults", "cycle=503,ok"])
        start(processes, sim + ["--port", str(backup)])
        start(
            processes,
            sim
            + ["--port", str(claude), "--faults", "cycle=overloaded,ok,ok,ok"]
            + ["--api-key-env", "SIM_CLAUDE_KEY"],
            {"SIM_CLAUDE_KEY": CLAUDE_KEY},
        )
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(config(primary, backup, claude, listen))
        start(
            processes,
            [str(bins / "tower-llm-gateway"), "--config", f.name],
            {"SIM_CLAUDE_KEY": CLAUDE_KEY},
        )
        base = f"http://127.0.0.1:{listen}"
        wait_until_up(f"{base}/health/live")
        passed = failed = 0
        for name, check in checks(base):
            try:
                said = check()
                passed += 1
                print(f"ok    {name}: {str(said)[:60]!r}")
            except Exception as e:  # a failed check is reported, not raised
                failed += 1
                print(f"FAIL  {name}: {type(e).__name__}: {str(e)[:300]}")
        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
