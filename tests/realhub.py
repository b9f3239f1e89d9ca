"""The real AgentCom hub (Elixir) at REALHUB_URL, for the tests marked `realhub`.

One registration per test session (the hub allows 10 a minute per IP): every other token is
minted with the first one through `POST /admin/tokens`, which any valid token may do there.
Agent ids carry a prefix unique to the session, so runs never meet each other's mailboxes.
The senders a test uses may be exempted from the hub's rate limits (any agent may add any id
to its whitelist); the agent under test never is.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import requests

JSON = {"content-type": "application/json"}


class RealHub:
    """What a test needs of a hub, as RunningHub offers it for the local one: url, mint,
    post, poll (ids are given in full: `agent(name)` makes them)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0]) if self.url.count(":") == 2 else 80
        self.prefix = f"rh{secrets.token_hex(3)}"
        self.http = requests.Session()
        self._count = 0
        self.minted: list[str] = []  # agent ids holding tokens minted here, revoked by `revoke_minted`
        self.exempted: list[str] = []  # agent ids put on the hub's rate-limit whitelist, taken off with them
        health = self.http.get(self.url + "/health", timeout=10)
        if health.status_code != 200 or health.json().get("service") != "agent_com":
            raise RuntimeError(f"REALHUB_URL={self.url} is not an AgentCom hub: {health.status_code}")
        reply = self.http.post(
            self.url + "/api/onboard/register", json={"agent_id": f"{self.prefix}-root"}, headers=JSON, timeout=10
        )
        if reply.status_code != 201:
            raise RuntimeError(f"could not register on the real hub: {reply.status_code} {reply.text[:200]}")
        self.root = reply.json()["token"]

    def _auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def agent(self, name: str) -> str:
        """A fresh agent id, unique to this session and this call."""
        self._count += 1
        return f"{self.prefix}-{self._count}-{name}"

    def mint(self, agent_id: str, exempt: bool = False) -> str:
        r = self.http.post(
            self.url + "/admin/tokens", json={"agent_id": agent_id}, headers=self._auth(self.root), timeout=10
        )
        assert r.status_code == 201, r.text
        self.minted.append(agent_id)
        if exempt:
            w = self.http.post(
                self.url + "/api/admin/rate-limits/whitelist",
                json={"agent_id": agent_id},
                headers=self._auth(self.root),
                timeout=10,
            )
            assert w.status_code == 200, w.text
            self.exempted.append(agent_id)
        return r.json()["token"]

    def revoke_minted(self) -> None:
        """Revoke the tokens minted so far: the hub stores every broadcast once per token it
        knows (about 30 ms each), so tokens left behind slow every later broadcast down."""
        for agent_id in dict.fromkeys(self.minted):
            self.http.delete(f"{self.url}/admin/tokens/{agent_id}", headers=self._auth(self.root), timeout=10)
        for agent_id in self.exempted:
            self.http.delete(
                f"{self.url}/api/admin/rate-limits/whitelist/{agent_id}", headers=self._auth(self.root), timeout=10
            )
        self.minted.clear()
        self.exempted.clear()

    def close(self) -> None:
        self.revoke_minted()
        self.http.delete(f"{self.url}/admin/tokens/{self.prefix}-root", headers=self._auth(self.root), timeout=10)
        self.http.close()

    def post(self, token: str, body: dict[str, Any]) -> requests.Response:
        """POST /api/message; a 429 is waited out (the hub says how long), so a test's
        burst goes through whatever the hub's limits."""
        for _ in range(200):
            r = self.http.post(self.url + "/api/message", json=body, headers=self._auth(token), timeout=10)
            if r.status_code != 429:
                return r
            time.sleep(int(r.json().get("retry_after_ms", 1000)) / 1000)
        return r

    def poll(self, agent: str, token: str, since: int = 0) -> dict[str, Any]:
        r = self.http.get(f"{self.url}/api/mailbox/{agent}?since={since}", headers=self._auth(token), timeout=10)
        r.raise_for_status()
        return r.json()

    def connected(self) -> list[str]:
        return [a["agent_id"] for a in self.http.get(self.url + "/api/agents", timeout=10).json()["agents"]]
