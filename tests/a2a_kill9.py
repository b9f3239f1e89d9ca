"""Run an A2A dispatcher until it is killed by `kill -9` right after its answer's POST reached the hub
(test infrastructure only: test_a2a.py runs it as a subprocess, then resumes on the same store).

argv[1]: JSON {"hub_url", "token", "state_dir", "config", "a2a_url", "a2a_token", "when"}; `when`
is "after" (SIGKILL once the hub has answered the POST) or "before" (SIGKILL just before it).
Exits 3 if no answer was posted within 60 s.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from agentcom_skill.a2a import A2AClient, A2ADispatcher
from agentcom_skill.actions.common import hub_client
from agentcom_skill.config import load_settings
from agentcom_skill.store import MessageStore


class KilledAroundThePost:
    def __init__(self, real: Any, when: str):
        self.real, self.when = real, when

    def send(self, to: str | None, type_: str | None, payload: dict[str, Any], reply_to: str | None = None) -> str:
        if self.when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        sent = self.real.send(to, type_, payload, reply_to)
        os.kill(os.getpid(), signal.SIGKILL)
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def main() -> int:
    args = json.loads(sys.argv[1])
    s = load_settings(
        {
            "hub_url": args["hub_url"],
            "agent_id": "alice",
            "token": args["token"],
            "state_dir": args["state_dir"],
            "config": args["config"],
        },
        env={},
    )
    store = MessageStore.open(s.agent_state_dir())
    hub = KilledAroundThePost(hub_client(s), args["when"])
    client = A2AClient(args["a2a_url"], args["a2a_token"], 10.0)
    dispatcher = A2ADispatcher(s, store, hub, lambda *a, **k: None, time.time, client)
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        dispatcher.step()
        time.sleep(0.05)
    return 3


if __name__ == "__main__":
    sys.exit(main())
