-- Owner console sessions: a browser signs in with an API key and gets a random session token
-- in an HttpOnly cookie. Only the token's SHA-256 is stored; a session ends at its expiry, on
-- sign-out, or when the API key it was opened with is revoked (checked on every request).

CREATE TABLE console_sessions (
    token_hash  bytea PRIMARY KEY,
    owner_id    uuid NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    key_id      uuid NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
