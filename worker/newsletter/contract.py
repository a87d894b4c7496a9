"""Names and inputs of the newsletter workflow and its batch activity: ids and numbers only.

Addresses, templates and secrets stay in PostgreSQL; Temporal history carries the execution id.
"""

from __future__ import annotations

from dataclasses import dataclass

from actions import newsletter

NEWSLETTER_WORKFLOW = "hookyard.newsletter"
SEND_BATCH_ACTIVITY = "hookyard.newsletter.send_batch"


def newsletter_id(execution_id: str) -> str:
    """Temporal workflow id of a newsletter execution."""
    return f"newsletter-{execution_id}"


@dataclass
class NewsletterJob:
    """Workflow input: what to send is in PostgreSQL under the execution id."""

    execution_id: str
    send_at: float | None = None  # Unix seconds; None: start now
    pause_s: float = newsletter.DEFAULT_PAUSE_S
    heartbeat_timeout_s: float = 30.0
    # Continue-as-new past this many history events (Temporal's hard limit is 51,200).
    history_limit: int = 8000


@dataclass
class BatchProgress:
    """What one batch did; `done` once the newsletter's final status is written (`status`)."""

    done: bool
    status: str = ""
    sent: int = 0
    failed: int = 0
    remaining: int = 0
