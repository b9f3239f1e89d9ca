"""`[wake] mode = "a2a"`: each conversation goes to an A2A agent as a task, and its answer back to the sender.

The watch's wake thread drives an `A2ADispatcher`. Messages that need the agent (after Tier 0)
are grouped by conversation (an A2A `contextId`: one per peer, or one per reply_to thread;
broadcasts one per sender), sent as the fenced prompt rendering with `SendMessage`
(`returnImmediately`), and polled with `GetTask`; the completed task's text goes back to the
sender through the hub as a `response` to the newest message it carried.

What the A2A agent (OpenClaw's A2A channel, checked against 2026.9.6) requires, and how it is met:
- one run per context at a time (a second message into a busy context never completes):
  one task in flight per context, later messages batched into the next task;
- a repeated `messageId` is skipped as a duplicate: a new random one for every send, retries too;
- tasks live in memory (a gateway restart answers `GetTask` with -32001): the task id is stored
  before waiting, a watch restart resumes polling instead of resending;
- a turn can fail for passing reasons (right after a gateway start: "another OpenClaw process owns
  state-lifecycle"; a lost task; a 5xx), and an error can come back as a completed task's text
  ("⚠️ Agent couldn't generate a response. Please try again."): such a task is sent again with
  backoff, a bounded number of times, and an error text is never sent to the peer;
- a per-peer request limit that counts polls (-32000 over HTTP 200, or 429; no Retry-After): a
  sliding-window pacer with a generous ceiling learns the limit from the first refusal and
  backs off; due requests take turns by peer, as do the task slots;
- text starting with `/` is refused as a command: the prompt starts with `[AgentCom]`;
- the text reaches the model as a plain user turn: our fence and the notice are the only guard.

The rooms of this package:
- `plan.py`: the pure decisions (context ids, which conversations go now with the loop guard's
  budget, retry and poll delays, the prompt, what to do with an answer);
- `pacer.py`: `RequestPacer`, the request limit learned from the agent's refusals (pure);
- `client.py`: `A2AClient`, JSON-RPC over the one HTTP layer (`transport`), and `read_reply`;
- `newtasks.py`: waiting messages leased to new tasks (`NewTasks`);
- `answers.py`: an answer's way back: whether it reached the hub, asked after a restart;
- `dispatcher.py`: `A2ADispatcher`, the shell that applies the decisions to the store (its
  task table is `a2a_tasks.py`), the agent and the hub, driven by the watch's wake thread.
"""

from __future__ import annotations

from .client import A2AClient, A2AReply, read_reply
from .dispatcher import A2ADispatcher
from .pacer import LEARNED_FOR, RequestPacer
from .plan import (
    MAX_ATTEMPTS,
    NO_REPLY,
    RETRY_FIRST,
    RETRY_MAX,
    Batch,
    Candidate,
    DispatchPlan,
    answer_action,
    context_id,
    fair_order,
    is_error_completion,
    plan_dispatch,
    poll_delay,
    prompt_text,
    retry_delay,
)

__all__ = [
    "LEARNED_FOR",
    "MAX_ATTEMPTS",
    "NO_REPLY",
    "RETRY_FIRST",
    "RETRY_MAX",
    "A2AClient",
    "A2ADispatcher",
    "A2AReply",
    "Batch",
    "Candidate",
    "DispatchPlan",
    "RequestPacer",
    "answer_action",
    "context_id",
    "fair_order",
    "is_error_completion",
    "plan_dispatch",
    "poll_delay",
    "prompt_text",
    "read_reply",
    "retry_delay",
]
