-- Sessions of `ebb serve`'s web UI: a browser logged in with an API token.
-- Only a digest of the session cookie is kept, and a digest of the API token
-- it was opened with, so a token removed from (or changed in) ebb.toml ends
-- its sessions. Every replica of `ebb serve` reads them here.
CREATE TABLE ebb_ui_sessions (
    id_digest    BYTEA PRIMARY KEY,
    token_name   TEXT NOT NULL,
    -- NULL when serve runs --insecure-no-auth (no token to check).
    token_digest BYTEA,
    -- Sent back in every form that changes something.
    csrf         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX ebb_ui_sessions_expiry ON ebb_ui_sessions (expires_at);
