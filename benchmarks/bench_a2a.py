#!/usr/bin/env python3
"""The A2A wake mode against the hooks one, with the real OpenClaw and the tests' scripted model.

1. Model calls per handled message: the same messages, one at a time, through `agentcom watch`
   in hooks mode (`[wake] mode = "agent"`: the agent answers with `agentcom reply`, then
   `agentcom ack`, then a final text, as SKILL.md says) and in A2A mode (`mode = "a2a"`: the
   agent's final text is the answer).
2. Hub -> answer at the sender: from the POST of a message at the hub to its answer in the
   sender's mailbox, median, warm gateway, `window = 0` (the default `window = 2` adds 2 s).
3. The prompt rendering's size as a share of the raw mailbox JSON on tests/data
   (the same measure as bench_tokens.py).

OpenClaw and Node come from the tests' cache (tests/openclaw_env.py provisions them on first
use). The gateway's A2A rate limit is raised to 600 a minute and the watch's pacing to 300, so
messages sent back to back measure the round trip, not OpenClaw's default limit (30 requests a
minute per peer: about 10-15 messages a minute at these latencies; the watch paces by its refusals).

Usage: python bench_a2a.py [--samples 9] [--no-openclaw]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RunningHub, agent_env, load_trace, median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakemodel import FakeModel, Turn, text_of  # noqa: E402
from openclaw_env import A2A_TOKEN, HOOK_TOKEN, Gateway, OpenClawHome, Unavailable, provision  # noqa: E402

MARK = re.compile(r"\bBENCH-(\d+)\b")
REF = re.compile(r"^\[([0-9a-f]{16}|\d+)\] ", re.M)


class Agent:
    """The scripted model: in hooks mode it follows SKILL.md (reply, ack, final text); in A2A
    mode its final text is the answer. Counts the model calls each message cost."""

    def __init__(self) -> None:
        self.mode = "a2a"
        self.calls: dict[int, int] = {}

    def __call__(self, request: dict) -> Turn:
        messages = request.get("messages", [])
        wakes = [
            (i, text_of(m))
            for i, m in enumerate(messages)
            if m.get("role") == "user" and "AGENTCOM_UNTRUSTED_" in text_of(m)
        ]
        if not wakes:
            return Turn(text="NO_REPLY")
        at, latest = wakes[-1]
        marks = MARK.findall(latest)
        if not marks:
            return Turn(text="AGENTCOM_NO_REPLY" if self.mode == "a2a" else "NO_REPLY")
        n = int(marks[-1])
        self.calls[n] = self.calls.get(n, 0) + 1
        if self.mode == "a2a":
            return Turn(text=f"Answer to BENCH-{n}.")
        done = sum(1 for m in messages[at:] if m.get("role") == "tool")
        ref = REF.findall(latest)[-1]
        if done == 0:
            return Turn(tool="exec", arguments={"command": f'agentcom reply {ref} "Answer to BENCH-{n}."'})
        if done == 1:
            return Turn(tool="exec", arguments={"command": f"agentcom ack {ref}"})
        return Turn(text="Answered and acked.")


def run_mode(
    mode: str,
    wake: str,
    hub: RunningHub,
    tokens: dict,
    env: dict,
    config: Path,
    agent: Agent,
    texts: list[str],
    first: int,
    tmp: Path,
) -> list[float]:
    """Send each text (one at a time) and time hub POST -> answer at bob's; returns the latencies."""
    agent.mode = mode
    config.write_text(wake)
    out = tmp / f"watch-{mode}.jsonl"
    watch = subprocess.Popen(
        [sys.executable, "-m", "agentcom_skill", "watch", "--jsonl"],
        env=env,
        stdout=open(out, "w"),
        stderr=open(tmp / f"watch-{mode}.err", "w"),
    )
    try:
        wait_for(lambda: '"connected"' in out.read_text(), "the watch connected", 60)
        if mode == "a2a":
            wait_for(lambda: '"a2a_ready"' in out.read_text(), "the A2A endpoint", 120)
        latencies = []
        for n, text in enumerate(texts, start=first):
            print(f"  {mode}: BENCH-{n}", file=sys.stderr, flush=True)
            sent_at = time.perf_counter()
            msg_id = hub.post(tokens["bob"], {"to": "gcu", "payload": {"text": f"{text} (BENCH-{n})"}}).json()["id"]
            wait_for(
                lambda msg_id=msg_id: any(m["reply_to"] == msg_id for m in hub.poll("bob", tokens["bob"])["messages"]),
                f"the answer to BENCH-{n}",
                300,
                pause=0.02,
            )
            latencies.append(time.perf_counter() - sent_at)
            if mode == "hooks":  # let the run finish (ack, final text) before the next wake
                wait_for(lambda n=n: agent.calls.get(n, 0) >= 3, f"the end of BENCH-{n}'s run", 120)
        return latencies
    finally:
        watch.terminate()
        watch.wait(timeout=60)


def wait_for(predicate, what: str, deadline: float, pause: float = 0.1) -> None:
    give_up_at = time.monotonic() + deadline
    while time.monotonic() < give_up_at:
        if predicate():
            return
        time.sleep(pause)
    raise RuntimeError(f"not within {deadline:g} s: {what}")


def openclaw_figures(samples: int, keep: bool = False) -> None:
    try:
        paths = provision()
    except Unavailable as exc:
        print(f"OpenClaw figures skipped: {exc}")
        return
    _, lines = load_trace()
    texts = [
        line["payload"]["text"] for line in lines if line["expect"] == "attention" and line["payload"].get("text")
    ][:samples]
    tmp = Path(tempfile.mkdtemp(prefix="agentcom-bench-a2a-"))
    try:
        hub = RunningHub(tmp)
        tokens = {name: hub.mint(name) for name in ("gcu", "bob")}
        agent = Agent()
        model = FakeModel(agent)
        oc = OpenClawHome(paths, tmp / "home", Path(sys.executable).parent)
        state, config = tmp / "state", tmp / "gcu.toml"
        skill_env = {
            "AGENTCOM_HUB_URL": hub.url,
            "AGENTCOM_AGENT_ID": "gcu",
            "AGENTCOM_STATE_DIR": str(state),
            "AGENTCOM_CONFIG": str(config),
        }
        port = oc.configure_gateway(model.base_url, skill_env, api_key=tokens["gcu"])
        cfg = oc.config()
        cfg["channels"]["a2a"]["rateLimitPerMinute"] = 600
        oc.write_config(cfg)
        started = time.perf_counter()
        gateway = Gateway(oc, port)
        gateway.wait_for_a2a()
        print(f"gateway: hooks after a moment, A2A channel {time.perf_counter() - started:.0f} s after start")
        env = agent_env(hub, "gcu", tokens["gcu"], tmp, AGENTCOM_STATE_DIR=str(state), AGENTCOM_CONFIG=str(config))
        try:
            hooks_wake = (
                f'[wake]\nmode = "agent"\nurl = "{gateway.url}"\ntoken = "{HOOK_TOKEN}"\nwindow = 0\nmin_interval = 0\n'
            )
            a2a_wake = (
                f'[wake]\nmode = "a2a"\nurl = "{gateway.a2a_url}"\ntoken = "{A2A_TOKEN}"\nwindow = 0\n'
                "requests_per_minute = 300\nanswer_budget = 1000\n"
            )  # one peer, many messages: not a loop
            results = {}
            for mode, wake in (("hooks", hooks_wake), ("a2a", a2a_wake)):
                run_mode(mode, wake, hub, tokens, env, config, agent, ["warm-up, please answer"], 1000, tmp)  # warm
                before = dict(agent.calls)
                latencies = run_mode(mode, wake, hub, tokens, env, config, agent, texts, 0, tmp)
                calls = [agent.calls.get(n, 0) - before.get(n, 0) for n in range(len(texts))]
                results[mode] = (calls, latencies)
        finally:
            gateway.stop()
            model.close()
            hub.stop()
    finally:
        if keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{len(texts)} messages from the labelled trace, one at a time, warm gateway, window = 0")
    print(f"{'mode':8} {'model calls / message':>22} {'hub -> answer, median':>22} {'min':>8} {'max':>8}")
    for mode, (calls, latencies) in results.items():
        per = sum(calls) / len(calls)
        low, mid, high = (x * 1000 for x in (min(latencies), median(latencies), max(latencies)))
        print(f"{mode:8} {per:22.2f} {mid:19.0f} ms {low:5.0f} ms {high:5.0f} ms")
    print("model calls per message, each:", json.dumps({m: c for m, (c, _) in results.items()}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--no-openclaw", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) and say where")
    args = parser.parse_args()
    from bench_tokens import measure

    m = measure()
    print(
        f"prompt rendering on tests/data: {m['prompt']} of {m['raw']} chars of raw mailbox JSON = "
        f"{m['prompt'] / m['raw']:.1%} ({m['attention']} attention messages of {m['messages']})"
    )
    if not args.no_openclaw:
        openclaw_figures(args.samples, args.keep)


if __name__ == "__main__":
    main()
