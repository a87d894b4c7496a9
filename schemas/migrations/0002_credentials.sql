-- Credentials (OAuth2 tokens and provider API keys), encrypted at rest, and connect links.

CREATE TABLE credentials (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq               bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    owner_id          uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    provider          text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('oauth2', 'api_key')),
    name              text NOT NULL,
    account_email     text,
    scopes            text[] NOT NULL DEFAULT '{}',
    status            text NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'needs_reconnect', 'revoked')),
    status_reason     text,
    -- JSON object of secret fields (tokens or API key), envelope-encrypted, row-bound AAD.
    -- Text, not varchar(n): Google access tokens reach 2 KB.
    secret            text NOT NULL,
    expires_at        timestamptz,
    last_refreshed_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credentials_owner_idx ON credentials (owner_id, seq DESC);
-- Reconnecting an account updates its credential instead of adding another.
CREATE UNIQUE INDEX credentials_account_idx ON credentials (owner_id, provider, lower(account_email))
    WHERE kind = 'oauth2';
-- Pub/Sub pushes name a mailbox by address only.
CREATE INDEX credentials_email_idx ON credentials (provider, lower(account_email)) WHERE kind = 'oauth2';

-- A connect link is single use: the callback that completes it sets used_at.
CREATE TABLE connect_links (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id        uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    provider        text NOT NULL,
    scopes          text[] NOT NULL,
    redirect_after  text,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    credential_id   uuid REFERENCES credentials(id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX connect_links_owner_idx ON connect_links (owner_id, created_at DESC);

-- Deleting an owner or listing by owner must not scan executions.
CREATE INDEX executions_owner_idx ON executions (owner_id, seq DESC);
