-- API keys can be listed (paged like every list), named, and revoked by their owner.
-- Existing keys are numbered in creation order and named "default".

ALTER TABLE api_keys ADD COLUMN name text NOT NULL DEFAULT 'default' CHECK (length(name) BETWEEN 1 AND 200);
ALTER TABLE api_keys ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
CREATE INDEX api_keys_owner_seq ON api_keys (owner_id, seq DESC);
