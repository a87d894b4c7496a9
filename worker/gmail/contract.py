"""The contract with the mailbox workflow (`gmail-mailbox-<credential id>`): its names,
input, signals and activity results, and the one way to wake it (`signal_mailbox`).

Workflow, activities, the push forwarder, the trigger sync hook and the reconciler all speak
to the workflow through this module only.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from temporalio.client import Client

from schemas.store.gmail import MailboxRef
from settings import TriggerSettings

MAILBOX_WORKFLOW = "hookyard.gmail_mailbox"
NOTIFY_SIGNAL = "notify"
RECONCILE_SIGNAL = "reconcile"
RECONCILE_ACTIVITY = "hookyard.gmail_reconcile_watch"
SYNC_ACTIVITY = "hookyard.gmail_sync"

# Activity error types meaning the mailbox's credential cannot be used until the owner
# reconnects it: the workflow ends instead of retrying (its workflows are paused meanwhile).
DEAD_CREDENTIAL = frozenset({"CredentialUnusable", "CredentialNotFound"})


def mailbox_workflow_id(credential_id: UUID | str) -> str:
    """Temporal id of a mailbox's workflow: the credential id only, never the address."""
    return f"gmail-mailbox-{credential_id}"


@dataclass
class MailboxInput:
    """Mailbox workflow input; also what continue-as-new carries over."""

    owner_id: str
    credential_id: str
    sweep_interval_s: float = 900.0
    watch_renew_s: float = 24 * 3600.0
    # Continue-as-new past this many history events.
    history_limit: int = 4000
    notified_history_id: int = 0
    cursor: int = 0
    reconcile: bool = True
    watch_due: float = 0.0
    sweep_due: float = 0.0


@dataclass
class Notify:
    """Signal: a push announced this history id (any order, possibly twice)."""

    history_id: int


@dataclass
class MailboxJob:
    """Activity input: which mailbox (ids only)."""

    owner_id: str
    credential_id: str


@dataclass
class WatchResult:
    """What reconciling the watch did: `active` False means the watch is stopped for good."""

    active: bool
    history_id: int = 0


@dataclass
class SyncResult:
    """Where the cursor stands after a sync, and how many messages were stored."""

    cursor: int
    stored: int
    full_sync: bool = False


async def signal_mailbox(
    client: Client, settings: TriggerSettings, ref: MailboxRef, *, history_id: int | None = None
) -> None:
    """Signal-with-start the mailbox workflow: a push (`history_id`) or a reconcile of its watch."""
    start = MailboxInput(
        owner_id=str(ref.owner_id),
        credential_id=str(ref.credential_id),
        sweep_interval_s=settings.gmail_sweep_interval_s,
        watch_renew_s=settings.gmail_watch_renew_s,
    )
    signal, args = (RECONCILE_SIGNAL, []) if history_id is None else (NOTIFY_SIGNAL, [Notify(history_id)])
    await client.start_workflow(
        MAILBOX_WORKFLOW,
        start,
        id=mailbox_workflow_id(ref.credential_id),
        task_queue=settings.task_queue,
        start_signal=signal,
        start_signal_args=args,
    )
