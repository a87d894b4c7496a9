"""`hookyard gmail setup`: the Google Cloud side of Gmail push, created idempotently.

1. The Pub/Sub topic Gmail publishes mailbox changes to.
2. `gmail-api-push@system.gserviceaccount.com` may publish to it (Gmail's push identity).
3. A push subscription delivering to hookyard's `/ingest/pubsub/gmail`, each request carrying
   an OIDC token of the given service account for the given audience (hookyard checks both).

Running it again changes nothing that is already right, and repairs what is not. Against the
Pub/Sub emulator (`PUBSUB_EMULATOR_HOST` set) the IAM step is skipped: the emulator has no IAM,
and it sends no OIDC token, so hookyard runs with `HOOKYARD_PUBSUB_VERIFY=false` there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from google.api_core.exceptions import AlreadyExists, GoogleAPICallError
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import pubsub_v1
from google.iam.v1 import policy_pb2
from google.protobuf import duration_pb2

GMAIL_PUSH_ACCOUNT = "serviceAccount:gmail-api-push@system.gserviceaccount.com"
PUBLISHER_ROLE = "roles/pubsub.publisher"


class SetupError(RuntimeError):
    """A step failed; the message says which and what to check."""


@dataclass(frozen=True)
class GmailSetup:
    """What to create."""

    project: str
    topic: str
    push_endpoint: str
    service_account: str
    subscription: str = ""
    audience: str = ""
    ack_deadline_s: int = 30

    @property
    def subscription_name(self) -> str:
        """The subscription id: given, or `<topic>-hookyard-push`."""
        return self.subscription or f"{self.topic}-hookyard-push"

    @property
    def token_audience(self) -> str:
        """The audience of the push tokens: given, or the push endpoint (Pub/Sub's own default)."""
        return self.audience or self.push_endpoint


def run_setup(setup: GmailSetup, say: Callable[[str], None] = print) -> str:
    """Create or repair the topic, its IAM binding and the push subscription; returns the topic path."""
    if not setup.push_endpoint.startswith(("https://", "http://")):
        raise SetupError("--push-endpoint must be the full URL of /ingest/pubsub/gmail")
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator:
        say(f"using the Pub/Sub emulator at {emulator}")
    try:
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
    except DefaultCredentialsError:
        raise SetupError(
            "no Google Cloud credentials: run `gcloud auth application-default login` "
            "or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from None
    topic: str = publisher.topic_path(setup.project, setup.topic)
    try:
        _topic(publisher, topic, say)
        if emulator:
            say("IAM: skipped, the emulator has no IAM (on Google Cloud Gmail's push account gets publish rights)")
        else:
            _grant_gmail(publisher, topic, say)
        _subscription(subscriber, setup, topic, say)
    except GoogleAPICallError as exc:
        raise SetupError(f"Pub/Sub refused: {exc.message}") from None
    finally:
        subscriber.close()
    say("")
    say("Configure hookyard with:")
    say(f"  HOOKYARD_GMAIL_TOPIC={topic}")
    say(f"  HOOKYARD_PUBSUB_SERVICE_ACCOUNT={setup.service_account}")
    say(f"  HOOKYARD_PUBSUB_AUDIENCE={setup.token_audience}")
    if emulator:
        say("  HOOKYARD_PUBSUB_VERIFY=false   (the emulator sends no token; never in production)")
    return topic


def _topic(publisher: pubsub_v1.PublisherClient, topic: str, say: Callable[[str], None]) -> None:
    try:
        publisher.create_topic(request={"name": topic})
        say(f"topic {topic}: created")
    except AlreadyExists:
        say(f"topic {topic}: exists")


def _grant_gmail(publisher: pubsub_v1.PublisherClient, topic: str, say: Callable[[str], None]) -> None:
    policy: policy_pb2.Policy = publisher.get_iam_policy(request={"resource": topic})
    for binding in policy.bindings:
        if binding.role == PUBLISHER_ROLE and GMAIL_PUSH_ACCOUNT in binding.members:
            say(f"IAM: {GMAIL_PUSH_ACCOUNT} already has {PUBLISHER_ROLE}")
            return
    policy.bindings.add(role=PUBLISHER_ROLE, members=[GMAIL_PUSH_ACCOUNT])
    publisher.set_iam_policy(request={"resource": topic, "policy": policy})
    say(f"IAM: granted {PUBLISHER_ROLE} to {GMAIL_PUSH_ACCOUNT}")


def _subscription(
    subscriber: pubsub_v1.SubscriberClient, setup: GmailSetup, topic: str, say: Callable[[str], None]
) -> None:
    name = subscriber.subscription_path(setup.project, setup.subscription_name)
    push_config = pubsub_v1.types.PushConfig(
        push_endpoint=setup.push_endpoint,
        oidc_token=pubsub_v1.types.PushConfig.OidcToken(
            service_account_email=setup.service_account, audience=setup.token_audience
        ),
    )
    retry = pubsub_v1.types.RetryPolicy(
        minimum_backoff=duration_pb2.Duration(seconds=10), maximum_backoff=duration_pb2.Duration(seconds=600)
    )
    try:
        subscriber.create_subscription(
            request={
                "name": name,
                "topic": topic,
                "push_config": push_config,
                "ack_deadline_seconds": setup.ack_deadline_s,
                "retry_policy": retry,
            }
        )
        verb = "created"
    except AlreadyExists:
        subscriber.modify_push_config(request={"subscription": name, "push_config": push_config})
        verb = "exists, push config updated"
    say(f"subscription {name}: {verb}")
    say(f"  pushes to {setup.push_endpoint}")
    say(f"  with OIDC tokens of {setup.service_account} (audience {setup.token_audience})")
