#!/usr/bin/env python3
"""What reaches the LLM for the labelled day of traffic: `check --format prompt` and
`check --json` against the raw mailbox JSON an agent would read with curl.

Tokens are approximated as characters / 4 (no tokenizer is installed; the ratio is what
matters). Usage: python benchmarks/bench_tokens.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

from common import LocalHub, load_trace


def measure() -> dict[str, int]:
    """Characters of each rendering on the labelled trace (and the counts behind them)."""
    header, lines = load_trace()
    agent = header["agent"]
    with LocalHub("--mailbox-cap", "2000") as hub:
        tokens = {name: hub.mint(name) for name in [agent, *header["peers"]]}
        attention_text = 0
        attention = 0
        for line in lines:
            hub.post(
                tokens[line["from"]],
                {k: line[k] for k in ("to", "type", "payload", "reply_to") if line.get(k) is not None},
            )
            if line["expect"] == "attention":
                attention += 1
                attention_text += len(line["payload"].get("text") or json.dumps(line["payload"], separators=(",", ":")))
        config = hub.dir / f"{agent}.toml"
        config.write_text(
            f"capabilities = {json.dumps(header['capabilities'])}\nignore_from = {json.dumps(header['ignore_from'])}\n"
        )
        env = hub.env(agent, tokens[agent])
        req = urllib.request.Request(
            f"{hub.url}/api/mailbox/{agent}?since=0", headers={"Authorization": f"Bearer {tokens[agent]}"}
        )
        raw = urllib.request.urlopen(req).read().decode()
        outputs = {}
        for name, args in (("prompt", ["--format", "prompt"]), ("json", ["--json"])):
            out = subprocess.run(
                [sys.executable, "-m", "agentcom_skill", "check", "--peek", *args],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            outputs[name] = out.stdout
    returned = len(json.loads(outputs["json"])["messages"])
    prompt_entries = len(re.findall(r"^\[\d+\] ", outputs["prompt"], re.M))  # one entry a message: `[seq] sender...`
    assert returned == attention == prompt_entries, (returned, attention, prompt_entries)

    return {
        "raw": len(raw),
        "json": len(outputs["json"]),
        "prompt": len(outputs["prompt"]),
        "text": attention_text,
        "messages": len(lines),
        "attention": attention,
    }


def main() -> None:
    m = measure()
    raw = m["raw"]
    rows = [
        ("raw mailbox JSON (curl)", raw),
        ("check --json", m["json"]),
        ("check --format prompt", m["prompt"]),
        ("attention messages' own text", m["text"]),
    ]
    print(f"trace: {m['messages']} messages, {m['attention']} need attention; tokens ~ chars/4")
    print(f"{'what reaches the LLM':32} {'chars':>8} {'~tokens':>8} {'vs raw':>7}")
    for name, size in rows:
        print(f"{name:32} {size:8d} {size // 4:8d} {size / raw:7.1%}")


if __name__ == "__main__":
    main()
