"""What every action opens: its settings, the agent's message store, the hub client; the
limits of a call, and the local key of a send the hub never confirmed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Settings, load_settings
from ..errors import UsageError
from ..legacy import has_state_file, import_state_file
from ..message import MailboxBatch
from ..store import MessageStore

if TYPE_CHECKING:  # for annotations only: the network client loads when a command talks to the hub
    from ..client import HubClient

    class Hub(Protocol):
        """What the actions ask of a hub: `HubClient`, or a stand-in (the watch's pushed frames,
        the property tests' model hub)."""

        def poll(self, agent_id: str, since: int = 0) -> MailboxBatch: ...

        def send(
            self, to: str | None, type_: str | None, payload: dict[str, Any], reply_to: str | None = None
        ) -> str: ...

        def ack(self, agent_id: str, seq: int) -> int: ...

        def agents(self) -> list[dict[str, Any]]: ...


def _say_waiting(text: str) -> None:
    import logging  # only when a run has to wait for another: not on the common path

    logging.getLogger("agentcom").warning(text)


def resolve_settings(settings: Settings | None, overrides: Mapping[str, Any]) -> Settings:
    if settings is not None:
        if overrides:
            raise UsageError("pass either settings or setting overrides, not both")
        return settings
    return load_settings(overrides, source_name="a keyword argument")


def hub_client(settings: Settings) -> HubClient:
    from ..client import HubClient  # imported only when the hub is used

    return HubClient(
        settings.hub_url,
        settings.token,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        deadline=settings.request_deadline,
        max_response_bytes=settings.max_response_bytes,
        ca_bundle=settings.ca_bundle,
        token_source=settings.sources.get("token", ""),
        url_source=settings.sources.get("hub_url", ""),
    )


STORE_FILES = ("messages.sqlite3", "messages.sqlite3-wal", "messages.sqlite3-shm", "messages.sqlite3-journal")


def forget_unused_state(directory: Path) -> None:
    """Remove an agent's state folder this run made for a hub it never reached (a mistyped
    hub_url or agent id): only the empty store's files, then the folder if nothing else is
    in it. Anything else there, or any error, leaves it as it is."""
    for name in STORE_FILES:
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return
    try:
        directory.rmdir()
    except OSError:
        pass


def open_store(settings: Settings) -> MessageStore:
    """The agent's message store, with 0.1's state.json imported into it the first time."""
    directory = settings.agent_state_dir()
    store = MessageStore.open(directory, settings.lock_timeout, on_wait=_say_waiting)
    if has_state_file(directory):
        try:
            import_state_file(store, directory, settings.lock_timeout)
        except BaseException:
            store.close()
            raise
    return store


UNCONFIRMED = "unconfirmed-"


def unconfirmed_id() -> str:
    """The local key of a send the hub probably took but whose id never came back."""
    import secrets

    return UNCONFIRMED + secrets.token_hex(8)


def is_confirmed(sent_id: str) -> bool:
    return not sent_id.startswith(UNCONFIRMED)


MAX_LIMIT = 1_000_000  # the most messages one call returns (a larger number is a mistake, not a wish)


def check_limit(limit: Any) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be a whole number from 1 to {MAX_LIMIT:,}")
