"""The `gmail.receive-email` trigger's sync hook: keep the mailbox a workflow reads watched.

Called by the dispatcher's trigger sync loop (worker/trigger_sync.py) after a workflow reading
a mailbox changes; it makes sure the mailbox row is active and signals the mailbox workflow
to reconcile its watch (which stops the watch when no active workflow reads it any more).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from schemas.store.gmail import MailboxRef, activate_mailbox, get_mailbox
from triggers.base import TriggerSyncContext, TriggerSyncError, WorkflowSyncState
from worker.gmail.contract import signal_mailbox


async def sync_mailbox(ctx: TriggerSyncContext, state: WorkflowSyncState) -> None:
    """Make sure the mailbox this workflow reads (and the one it read before) reconcile their watch."""
    current = _mailbox_of(state.trigger_config)
    previous = _mailbox_of(state.previous_config) if state.previous_config else None
    wanted = current if state.active and not state.deleted else None
    to_signal: list[MailboxRef] = []
    async with ctx.pool.acquire() as conn:
        for mailbox in dict.fromkeys(m for m in (current, previous) if m is not None):
            ref = MailboxRef(state.owner_id, mailbox)
            if mailbox == wanted:
                if not await activate_mailbox(conn, ref):
                    raise TriggerSyncError(f"credential {mailbox} is not a connected Google account")
            else:
                row = await get_mailbox(conn, ref)
                if row is None or row["status"] == "stopped":
                    continue  # nothing is watched there
            to_signal.append(ref)
    for ref in to_signal:
        await signal_mailbox(ctx.temporal, ctx.settings, ref)


def _mailbox_of(config: Mapping[str, Any] | None) -> UUID | None:
    try:
        return UUID(str((config or {})["mailbox"]))
    except (KeyError, ValueError):
        return None
