"""Waking the agent: when (`WakeBatcher`, pure, clock passed in), how (`Waker`), and what a
failed wake leaves (`WakeOutcome`, `wake_error`, `WakeFailures`: the one "WAKE REFUSED" and its
pause), for both wake drivers: `hookwake.HookWakeDriver` (the modes below) and the A2A one.

Modes (the config's `[wake]` table):
- `agent`: `POST /hooks/agent` on the OpenClaw gateway with the prompt rendering of the
  waiting messages (OpenClaw wraps it as untrusted external content; our fence is inside).
- `wake`: `POST /hooks/wake` with a fixed notice we wrote. Never message content: OpenClaw
  hands that text to the model unwrapped, as trusted system context.
- `command`: run a command with the prompt rendering on stdin (other runtimes): a list of
  words as given, or one string through `/bin/sh -c` when `shell = true`.
- `a2a`: send the prompt rendering as an A2A task and the agent's answer back to the sender
  (`a2a/`; its own driver, not `Waker`).
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .config import WakeSettings
from .errors import ConfigError
from .transport import (
    BearerAuth,
    BodyTooLarge,
    DeadlinePassed,
    Peer,
    TransportError,
    UndecodableBody,
    check_proxy,
    clamp_wait,
    exchange,
    new_session,
    retry_after_seconds,
)
from .untrusted import neutralise

WAKE_NOTICE = "{n} AgentCom message(s) need attention; run `agentcom check` to read them."
MAX_BACKOFF = 60.0
STDERR_LINES = 3
UNAUTHORIZED_PAUSE = 600.0  # seconds without a wake after the target refused our token (a SIGHUP ends it)
Report = Callable[..., None]  # report(kind, text, **fields): a watch event


class WakeBatcher:
    """One wake for messages arriving within `window` seconds; at most one per `min_interval`;
    after a failed wake, exponential backoff with full jitter (or the gateway's Retry-After)."""

    def __init__(self, window: float, min_interval: float, rng: random.Random | None = None):
        self.window = window
        self.min_interval = min_interval
        self.rng = rng or random.Random()
        self.first_waiting_at: float | None = None
        self.last_wake_at: float | None = None
        self.not_before = 0.0
        self.failures = 0

    def note_waiting(self, now: float, waiting: int) -> None:
        if waiting <= 0:
            self.first_waiting_at = None
        elif self.first_waiting_at is None:
            self.first_waiting_at = now

    def due_at(self) -> float | None:
        """When the next wake may go, or None when nothing waits."""
        if self.first_waiting_at is None:
            return None
        due = self.first_waiting_at + self.window
        if self.last_wake_at is not None:
            due = max(due, self.last_wake_at + self.min_interval)
        return max(due, self.not_before)

    def woke(self, now: float) -> None:
        self.last_wake_at = now
        self.first_waiting_at = None
        self.failures = 0
        self.not_before = 0.0

    def failed(self, now: float, retry_after: float | None = None) -> float:
        """Hold the next try back; returns the delay chosen."""
        self.failures += 1
        if retry_after is not None:
            delay = clamp_wait(retry_after)
        else:
            delay = self.rng.uniform(0, min(MAX_BACKOFF, 2.0**self.failures))
        self.not_before = now + delay
        return delay


@dataclass(frozen=True)
class WakeOutcome:
    kind: str  # ok | retry | unauthorized | refused
    detail: str = ""
    retry_after: float | None = None
    status: str = ""  # a short status for `agentcom status`: "exit 1", "timeout"; HTTP ones are in `detail`


def idempotency_key(ids: Sequence[str], deliveries: Sequence[int]) -> str:
    """The same wake retried gets the same key (the gateway runs it once); a redelivery gets a new one."""
    text = "\n".join(f"{i}:{d}" for i, d in sorted(zip(ids, deliveries, strict=True)))
    return "agentcom-" + hashlib.sha256(text.encode()).hexdigest()[:40]


class Waker:
    def __init__(self, wake: WakeSettings):
        self.wake = wake

    def send(self, prompt: str, ids: Sequence[str], deliveries: Sequence[int]) -> WakeOutcome:
        if self.wake.mode == "command":
            return self._command(prompt)
        if self.wake.mode == "wake":
            notice = {"text": WAKE_NOTICE.format(n=len(ids)), "mode": "now"}
            return self._post("/hooks/wake", notice, None)
        body: dict[str, Any] = {
            "message": prompt,
            "name": "AgentCom",
            "sessionKey": self.wake.session_key,
            "wakeMode": "now",
            "deliver": False,
        }
        if self.wake.agent_id:
            body["agentId"] = self.wake.agent_id
        return self._post("/hooks/agent", body, idempotency_key(ids, deliveries))

    def _post(self, path: str, body: dict, key: str | None) -> WakeOutcome:
        assert self.wake.url is not None
        try:
            check_proxy(self.wake.url)
        except ConfigError as exc:
            return WakeOutcome("refused", str(exc))
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        timeout = self.wake.timeout
        gateway = f"gateway {self.wake.url} (wake.url)"
        session = new_session()
        try:
            reply = exchange(
                session,
                "POST",
                self.wake.url + path,
                headers=headers,
                body=json.dumps(body).encode(),
                auth=BearerAuth(self.wake.token),
                verify=None,
                timeouts=(min(5.0, timeout), timeout),
                give_up_at=time.monotonic() + timeout,
                max_bytes=1024 * 1024,
                peer=Peer("gateway", "wake.url"),
            )
        except TransportError as exc:
            return WakeOutcome("retry", f"{gateway} unreachable: {exc.reason}")
        except (BodyTooLarge, DeadlinePassed, UndecodableBody):
            return WakeOutcome("retry", f"{gateway} gave no usable reply in time")
        finally:
            session.close()
        if 200 <= reply.status < 300:
            return WakeOutcome("ok", f"{path} {reply.status}")
        if reply.status in (401, 403):
            return WakeOutcome(
                "unauthorized", f"gateway {self.wake.url} refused the wake token ({reply.status}) for {path}"
            )
        if reply.status == 429 or reply.status >= 500:
            retry_after = retry_after_seconds(reply.headers.get("retry-after"))
            return WakeOutcome("retry", f"gateway answered {reply.status} to {path}", retry_after)
        return WakeOutcome(
            "refused",
            f"gateway answered {reply.status} to {path}: check the [wake] settings (session_key, agent_id, hooks "
            f"config)",
        )

    def _command(self, prompt: str) -> WakeOutcome:
        data = prompt if prompt.endswith("\n") else prompt + "\n"  # a text file ends with a newline
        try:
            done = subprocess.run(
                self.wake.argv(),
                input=data.encode(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=self.wake.timeout,
            )
        except subprocess.TimeoutExpired:
            return WakeOutcome("retry", f"wake command ran over its {self.wake.timeout:g} s timeout", status="timeout")
        except (OSError, subprocess.SubprocessError) as exc:
            why = f"{type(exc).__name__}: {getattr(exc, 'strerror', '') or ''}".rstrip(": ")
            return WakeOutcome("retry", f"wake command failed to run: {why}", status="not run")
        if done.returncode == 0:
            return WakeOutcome("ok", "command exited 0")
        detail = f"wake command exited {done.returncode}" + stderr_excerpt(done.stderr)
        return WakeOutcome("retry", detail, status=f"exit {done.returncode}")


def stderr_excerpt(raw: bytes, lines: int = STDERR_LINES, width: int = 200) -> str:
    """The first lines of a failing command's stderr, neutralised, for the event and `status`."""
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return " (no stderr)"
    shown = [neutralise(line)[:width] for line in text.splitlines()[:lines]]
    more = " ..." if len(text.splitlines()) > lines else ""
    return ": stderr: " + " | ".join(shown) + more


def wake_error(outcome: WakeOutcome, wake: WakeSettings, now: float) -> dict[str, Any]:
    """What `status`, `check` and watch.json keep of a failed wake: when, what, what to fix."""
    where = " ".join(wake.argv())[:120] if wake.mode == "command" else str(wake.url)
    if outcome.kind == "unauthorized":
        fix = "the wake token was refused: fix [wake] token / token_file (or AGENTCOM_WAKE_TOKEN), restart the watch"
    elif outcome.kind == "refused":
        fix = f"{where} refused the request: check the [wake] settings against the gateway's config"
    elif wake.mode == "command":
        fix = "fix [wake] command (a list of words, or a string with shell = true); its stderr is in the detail"
    else:
        fix = f"is the gateway running and reachable at {where}? retried with backoff; messages wait for `check`"
    return {
        "at": now,
        "mode": wake.mode,
        "kind": outcome.kind,
        "status": outcome.status or outcome.kind,
        "detail": outcome.detail,
        "fix": fix,
    }


class WakeFailures:
    """What a wake driver keeps of its failures: the last one, for `status` (marked cleared once
    a wake goes through); the pause after the target refused our token; and the problems
    already reported (each said once, not at every try)."""

    def __init__(self, wake: WakeSettings, report: Report):
        self.wake = wake
        self.report = report
        self.last: dict[str, Any] | None = None
        self.paused_until = 0.0
        self.reported: set[str] = set()

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    def failed(self, now: float, outcome: WakeOutcome, fix: str | None = None) -> None:
        self.last = wake_error(outcome, self.wake, now)
        if fix:
            self.last["fix"] = fix

    def refused_token(self, now: float, outcome: WakeOutcome) -> None:
        """The target refused our token: no wake for UNAUTHORIZED_PAUSE seconds (retrying
        cannot help until someone fixes it); said loudly, once."""
        self.paused_until = now + UNAUTHORIZED_PAUSE
        self.failed(now, outcome)
        self.once(
            "unauthorized",
            "wake_unauthorized",
            f"WAKE REFUSED: {outcome.detail}; fix [wake] token; still receiving and storing",
        )

    def once(self, key: str, kind: str, text: str) -> None:
        if key not in self.reported:
            self.reported.add(key)
            self.report(kind, text)

    def cleared(self, now: float) -> bool:
        """A wake went through: the last error stays for `status`, marked cleared (`check`
        stops warning). True when that changed it."""
        if self.last is None or "cleared_at" in self.last:
            return False
        self.last = {**self.last, "cleared_at": now}
        return True

    def resume(self) -> None:
        """SIGHUP with the same [wake] (the fault was elsewhere: the gateway, its token): no
        more pause, and a new refusal is said again."""
        self.paused_until = 0.0
        self.reported.discard("unauthorized")
