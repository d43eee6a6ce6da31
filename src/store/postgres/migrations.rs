//! The PostgreSQL schema, as a list of versioned scripts.
//!
//! Same rules as the SQLite schema: a released script is never edited; a
//! change is a new script appended to [`MIGRATIONS`]. The applied version is
//! the largest row of `xborder_schema`. Each script runs in one transaction
//! with its version row, under a transaction-scoped advisory lock, so
//! replicas starting together migrate once and a crash leaves the old
//! version or the new one.

use tokio_postgres::Client;

use crate::store::StoreError;

/// Script `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1_INITIAL];

/// The advisory lock key that serialises migrations ("xbmigrat").
const MIGRATION_LOCK: i64 = 0x7862_6d69_6772_6174;

/// The schema version this code writes and reads.
pub(super) const fn current_version() -> i32 {
    MIGRATIONS.len() as i32
}

/// Brings the schema up to [`current_version`]; refuses a newer one.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS xborder_schema (
            version     INTEGER     NOT NULL PRIMARY KEY CHECK (version >= 1),
            applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let version: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM xborder_schema", &[])
        .await?
        .get(0);
    if version > current_version() {
        return Err(StoreError::Backend(Box::new(SchemaError::TooNew {
            found: version,
            known: current_version(),
        })));
    }
    for (from, script) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(script).await?;
        tx.execute(
            "INSERT INTO xborder_schema (version) VALUES ($1)",
            &[&(from as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SchemaError {
    #[error(
        "the database has schema version {found}, newer than the {known} this xborder knows; \
         run a newer xborder (downgrades are not supported)"
    )]
    TooNew { found: i32, known: i32 },
}

/// Version 1: the whole model as the SQLite schema has it after its
/// version 4 (requests, findings, approvals, grants, transfers, the audit
/// log, the notice outbox), plus what sharing needs: `seq` columns that keep
/// insertion order (SQLite's rowid), and `audit_head`, the one row every
/// append locks so the log has one order across replicas.
///
/// Times are Unix milliseconds (`BIGINT`), enums their `as_str()` text,
/// JSON values text checked as JSON. The audit tree keeps every complete
/// subtree in `audit_nodes`, leaves at level 0.
const V1_INITIAL: &str = r#"
CREATE TABLE requests (
    seq                     BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                      TEXT    NOT NULL PRIMARY KEY,
    requester               TEXT    NOT NULL,
    requester_jurisdiction  TEXT    NOT NULL,
    holder                  TEXT    NOT NULL,
    thumbprint              TEXT    NOT NULL,
    scope_json              TEXT    NOT NULL CHECK (scope_json::jsonb IS NOT NULL),
    state                   TEXT    NOT NULL
        CHECK (state IN ('pending', 'approved', 'denied', 'refused')),
    policy_hash             TEXT    NOT NULL,
    filed_at                BIGINT  NOT NULL,
    deadline                BIGINT  NOT NULL,
    decided_at              BIGINT,
    decided_by              TEXT,
    reason                  TEXT,
    grant_id                TEXT
);
CREATE INDEX requests_by_state ON requests (state, filed_at);
CREATE INDEX requests_by_filed_at ON requests (filed_at);

CREATE TABLE findings (
    request_id  TEXT    NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    seq         BIGINT  NOT NULL CHECK (seq >= 0),
    rule        TEXT    NOT NULL,
    verdict     TEXT    NOT NULL CHECK (verdict IN ('pass', 'fail', 'needs_review')),
    reason      TEXT    NOT NULL,
    PRIMARY KEY (request_id, seq)
);

CREATE TABLE approvals (
    seq         BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    request_id  TEXT    NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    approver    TEXT    NOT NULL,
    at          BIGINT  NOT NULL,
    PRIMARY KEY (request_id, approver)
);

CREATE TABLE grants (
    seq                   BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                    TEXT    NOT NULL PRIMARY KEY,
    request_id            TEXT    NOT NULL UNIQUE REFERENCES requests (id),
    grantee               TEXT    NOT NULL,
    grantee_jurisdiction  TEXT    NOT NULL,
    holder                TEXT    NOT NULL,
    thumbprint            TEXT    NOT NULL,
    scope_json            TEXT    NOT NULL CHECK (scope_json::jsonb IS NOT NULL),
    max_bytes             BIGINT  CHECK (max_bytes >= 0),
    max_transfers         BIGINT  CHECK (max_transfers >= 0),
    used_bytes            BIGINT  NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    used_transfers        BIGINT  NOT NULL DEFAULT 0 CHECK (used_transfers >= 0),
    approvers_json        TEXT    NOT NULL CHECK (approvers_json::jsonb IS NOT NULL),
    issued_at             BIGINT  NOT NULL,
    expires_at            BIGINT  NOT NULL,
    validation_due        BIGINT,
    validated_by          TEXT,
    validated_at          BIGINT,
    state                 TEXT    NOT NULL
        CHECK (state IN ('active', 'expired', 'exhausted', 'revoked')),
    ended_cause           TEXT
        CHECK (ended_cause IN ('expired', 'exhausted', 'validation_missed', 'manual')),
    ended_at              BIGINT,
    ended_by              TEXT,
    ended_reason          TEXT,
    token                 TEXT    NOT NULL,
    CHECK (
        (state = 'active' AND ended_cause IS NULL AND ended_at IS NULL
            AND ended_by IS NULL AND ended_reason IS NULL)
        OR (state = 'expired' AND ended_cause = 'expired' AND ended_at IS NOT NULL)
        OR (state = 'exhausted' AND ended_cause = 'exhausted' AND ended_at IS NOT NULL)
        OR (state = 'revoked' AND ended_cause IN ('validation_missed', 'manual')
            AND ended_at IS NOT NULL)
    ),
    CHECK (validated_by IS NULL OR validation_due IS NOT NULL)
);
CREATE INDEX grants_by_state ON grants (state, issued_at);
CREATE INDEX grants_due_expiry ON grants (expires_at) WHERE state = 'active';
CREATE INDEX grants_due_validation ON grants (validation_due)
    WHERE state = 'active' AND validated_by IS NULL AND validation_due IS NOT NULL;
-- The resync after a lost LISTEN connection: grants ended since then.
CREATE INDEX grants_ended ON grants (ended_at) WHERE state <> 'active';

CREATE TABLE transfers (
    seq                 BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                  TEXT    NOT NULL PRIMARY KEY,
    grant_id            TEXT    NOT NULL REFERENCES grants (id),
    grantee             TEXT    NOT NULL,
    route               TEXT    NOT NULL,
    category            TEXT    NOT NULL,
    target              TEXT    NOT NULL,
    started_at          BIGINT  NOT NULL,
    -- The liveness key of the replica streaming it (see `liveness`).
    opened_by           BIGINT  NOT NULL,
    state               TEXT    NOT NULL CHECK (state IN ('open', 'closed')),
    ended_at            BIGINT,
    complete            BOOLEAN,
    incomplete          TEXT
        CHECK (incomplete IN ('exhausted', 'revoked', 'expired', 'validation_missed',
            'client_gone', 'upstream_failed', 'shutting_down', 'interrupted')),
    plaintext_bytes     BIGINT  NOT NULL DEFAULT 0 CHECK (plaintext_bytes >= 0),
    ciphertext_bytes    BIGINT  NOT NULL DEFAULT 0 CHECK (ciphertext_bytes >= 0),
    plaintext_sha256    TEXT,
    ciphertext_sha256   TEXT,
    receipt_json        TEXT    CHECK (receipt_json IS NULL OR receipt_json::jsonb IS NOT NULL),
    jws                 TEXT,
    CHECK (
        (state = 'open' AND ended_at IS NULL AND complete IS NULL AND incomplete IS NULL
            AND plaintext_bytes = 0 AND ciphertext_bytes = 0
            AND plaintext_sha256 IS NULL AND ciphertext_sha256 IS NULL
            AND receipt_json IS NULL AND jws IS NULL)
        OR (state = 'closed' AND ended_at IS NOT NULL
            AND plaintext_sha256 IS NOT NULL AND ciphertext_sha256 IS NOT NULL
            AND receipt_json IS NOT NULL AND jws IS NOT NULL
            AND ((complete AND incomplete IS NULL)
                OR (NOT complete AND incomplete IS NOT NULL)))
    )
);
CREATE INDEX transfers_by_grant ON transfers (grant_id);
CREATE INDEX transfers_open ON transfers (started_at, seq) WHERE state = 'open';

CREATE TABLE audit_head (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    size    BIGINT  NOT NULL CHECK (size >= 0)
);
INSERT INTO audit_head (id, size) VALUES (1, 0);

CREATE TABLE audit_entries (
    idx     BIGINT  NOT NULL PRIMARY KEY CHECK (idx >= 0),
    at      BIGINT  NOT NULL,
    kind    TEXT    NOT NULL,
    entry   BYTEA   NOT NULL
);

CREATE TABLE audit_nodes (
    level   INTEGER NOT NULL CHECK (level >= 0),
    idx     BIGINT  NOT NULL CHECK (idx >= 0),
    hash    BYTEA   NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TABLE notices (
    seq               BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                TEXT    NOT NULL PRIMARY KEY,
    grant_id          TEXT    NOT NULL UNIQUE REFERENCES grants (id),
    request_id        TEXT    NOT NULL REFERENCES requests (id),
    due_at            BIGINT  NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'delivered')),
    attempts          BIGINT  NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   BIGINT  NOT NULL,
    last_attempt_at   BIGINT,
    last_error        TEXT,
    delivered_at      BIGINT,
    status            INTEGER CHECK (status BETWEEN 200 AND 299),
    CHECK (next_attempt_at >= due_at),
    CHECK ((attempts = 0) = (last_attempt_at IS NULL)),
    CHECK (
        (state = 'pending' AND delivered_at IS NULL AND status IS NULL)
        OR (state = 'delivered' AND delivered_at IS NOT NULL AND status IS NOT NULL
            AND attempts >= 1)
    )
);
CREATE INDEX notices_due ON notices (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notices_by_state ON notices (state, due_at);
"#;
