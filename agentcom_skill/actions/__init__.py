"""The actions behind the CLI, the MCP server and the watch: each returns the plain dict
`--json` prints. One module per job (a module imports only those above it in this list):

- `common`: what every action opens (settings, the store, the hub client), call limits,
  the local key of a send the hub never confirmed.
- `refs`: naming a message (seq, id, id prefix) and the stored rows a name finds.
- `hazards`: another connection under our id, the watch's state and failed wakes.
- `check`: `check` and `wait`, and `run_check`, the one pipeline for a poll, the watch's
  pushed frames and the store alone (auto-replies, the hub's ack, pruning).
- `finish`: `ack`, `defer`, `dismiss`.
- `send`: `send`, `reply`, `ping`, into a channel or the room.
- `history`: the read-only `show`, `inbox`, `thread`, `search`, `sent`, `log`.
- `channels`: `join`, `leave`, `channels`.
- `status`: `status`, `set_status`, `agents`.
- `config_init`: `agentcom config init`.

The package's public API (`agentcom_skill.check`, ...) reaches these lazily.
"""
