//! The SQLite schema, as a list of versioned scripts.
//!
//! Hand-written rather than refinery or rusqlite_migration: the whole runner
//! is a loop over a slice, and those crates pin a rusqlite version, so every
//! rusqlite upgrade would wait for theirs. The applied version is SQLite's own
//! `PRAGMA user_version` (stored in the file header, transactional), so there
//! is no bookkeeping table.
//!
//! Rules: a script, once released, is never edited; a change is a new script
//! appended to [`MIGRATIONS`]. Each script runs in one `BEGIN IMMEDIATE`
//! transaction together with the version bump, so a crash leaves the file at
//! the old version or the new one, never between.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// Script `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[V1_INITIAL, V2_TRANSFERS, V3_AUDIT, V4_NOTICES];

/// The schema version this code writes and reads.
pub(super) const fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Brings the schema up to [`current_version`]; refuses a newer one.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    check_not_newer(user_version(conn)?)?;
    for (from, script) in MIGRATIONS.iter().enumerate() {
        let from = from as u32;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read again under the write lock: another process opening the same
        // file may have migrated since.
        let version = user_version(&tx)?;
        check_not_newer(version)?;
        if version > from {
            continue;
        }
        tx.execute_batch(script)?;
        tx.pragma_update(None, "user_version", from + 1)?;
        tx.commit()?;
    }
    Ok(())
}

pub(super) fn user_version(conn: &Connection) -> Result<u32, StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    // user_version is a signed 32-bit header field; a negative one was not written by us.
    u32::try_from(version).map_err(|_| StoreError::Backend(Box::new(SchemaError::Foreign(version))))
}

fn check_not_newer(version: u32) -> Result<(), StoreError> {
    if version > current_version() {
        return Err(StoreError::Backend(Box::new(SchemaError::TooNew {
            found: version,
            known: current_version(),
        })));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SchemaError {
    #[error(
        "the database has schema version {found}, newer than the {known} this xborder knows; \
         run a newer xborder (downgrades are not supported)"
    )]
    TooNew { found: u32, known: u32 },
    #[error(
        "the database has schema version {0}, which xborder never writes; is it an xborder store?"
    )]
    Foreign(i64),
}

/// Version 1: requests with findings and approvals, grants.
///
/// Times are Unix milliseconds (`INTEGER`). Enums are their `as_str()` text,
/// guarded by CHECKs. `scope_json` and `approvers_json` are values, not
/// things queried by part. `requests.grant_id` has no foreign key: it and
/// `grants.request_id` would reference each other, and the latter (UNIQUE,
/// with a foreign key) is the authoritative link.
const V1_INITIAL: &str = r#"
CREATE TABLE requests (
    id                      TEXT    NOT NULL PRIMARY KEY,
    requester               TEXT    NOT NULL,
    requester_jurisdiction  TEXT    NOT NULL,
    holder                  TEXT    NOT NULL,
    thumbprint              TEXT    NOT NULL,
    scope_json              TEXT    NOT NULL CHECK (json_valid(scope_json)),
    state                   TEXT    NOT NULL
        CHECK (state IN ('pending', 'approved', 'denied', 'refused')),
    policy_hash             TEXT    NOT NULL,
    filed_at                INTEGER NOT NULL,
    deadline                INTEGER NOT NULL,
    decided_at              INTEGER,
    decided_by              TEXT,
    reason                  TEXT,
    grant_id                TEXT
) STRICT;

-- The review queue (`requests(Some(state))`, newest first) and the full list.
CREATE INDEX requests_by_state ON requests (state, filed_at);
CREATE INDEX requests_by_filed_at ON requests (filed_at);

CREATE TABLE findings (
    request_id  TEXT    NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL CHECK (seq >= 0),
    rule        TEXT    NOT NULL,
    verdict     TEXT    NOT NULL CHECK (verdict IN ('pass', 'fail', 'needs_review')),
    reason      TEXT    NOT NULL,
    PRIMARY KEY (request_id, seq)
) STRICT, WITHOUT ROWID;

-- A rowid table on purpose: approvals at the same millisecond keep the order
-- they were recorded in (ORDER BY at, rowid).
CREATE TABLE approvals (
    request_id  TEXT    NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    approver    TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (request_id, approver)
) STRICT;

CREATE TABLE grants (
    id                    TEXT    NOT NULL PRIMARY KEY,
    request_id            TEXT    NOT NULL UNIQUE REFERENCES requests (id),
    grantee               TEXT    NOT NULL,
    grantee_jurisdiction  TEXT    NOT NULL,
    holder                TEXT    NOT NULL,
    thumbprint            TEXT    NOT NULL,
    scope_json            TEXT    NOT NULL CHECK (json_valid(scope_json)),
    max_bytes             INTEGER CHECK (max_bytes >= 0),
    max_transfers         INTEGER CHECK (max_transfers >= 0),
    used_bytes            INTEGER NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    used_transfers        INTEGER NOT NULL DEFAULT 0 CHECK (used_transfers >= 0),
    approvers_json        TEXT    NOT NULL CHECK (json_valid(approvers_json)),
    issued_at             INTEGER NOT NULL,
    expires_at            INTEGER NOT NULL,
    validation_due        INTEGER,
    validated_by          TEXT,
    -- Not in `Grant` yet; kept so the validation's time is not lost.
    validated_at          INTEGER,
    state                 TEXT    NOT NULL
        CHECK (state IN ('active', 'expired', 'exhausted', 'revoked')),
    ended_cause           TEXT
        CHECK (ended_cause IN ('expired', 'exhausted', 'validation_missed', 'manual')),
    ended_at              INTEGER,
    ended_by              TEXT,
    ended_reason          TEXT,
    token                 TEXT    NOT NULL,
    -- An active grant has no ending; an ended one has a cause that fits its state.
    CHECK (
        (state = 'active' AND ended_cause IS NULL AND ended_at IS NULL
            AND ended_by IS NULL AND ended_reason IS NULL)
        OR (state = 'expired' AND ended_cause = 'expired' AND ended_at IS NOT NULL)
        OR (state = 'exhausted' AND ended_cause = 'exhausted' AND ended_at IS NOT NULL)
        OR (state = 'revoked' AND ended_cause IN ('validation_missed', 'manual')
            AND ended_at IS NOT NULL)
    ),
    CHECK (validated_by IS NULL OR validation_due IS NOT NULL)
) STRICT;

CREATE INDEX grants_by_state ON grants (state, issued_at);

-- The expiry scheduler: `next_due` and `due` read only active grants, so
-- these stay as small as the set of live grants. `state` leads although it
-- is constant: without it the planner prefers `grants_by_state`.
CREATE INDEX grants_due_expiry ON grants (state, expires_at) WHERE state = 'active';
CREATE INDEX grants_due_validation ON grants (state, validation_due)
    WHERE state = 'active' AND validated_by IS NULL AND validation_due IS NOT NULL;
"#;

/// Version 2: transfers, from opening to their receipt.
///
/// A row is inserted `open` (counted in the grant's `used_transfers` in the
/// same transaction) and updated once to `closed` with the receipt, its JWS
/// and the columns a query may want without parsing JSON. `receipt_json` is
/// the receipt as signed (less `iss` and `iat`); `transfer_receipt` reads it,
/// not the columns. Hashes are NULL while open; on an `interrupted` receipt
/// they are empty (not known).
const V2_TRANSFERS: &str = r#"
CREATE TABLE transfers (
    id                  TEXT    NOT NULL PRIMARY KEY,
    grant_id            TEXT    NOT NULL REFERENCES grants (id),
    grantee             TEXT    NOT NULL,
    route               TEXT    NOT NULL,
    category            TEXT    NOT NULL,
    target              TEXT    NOT NULL,
    started_at          INTEGER NOT NULL,
    state               TEXT    NOT NULL CHECK (state IN ('open', 'closed')),
    ended_at            INTEGER,
    complete            INTEGER CHECK (complete IN (0, 1)),
    incomplete          TEXT
        CHECK (incomplete IN ('exhausted', 'revoked', 'expired', 'validation_missed',
            'client_gone', 'upstream_failed', 'shutting_down', 'interrupted')),
    plaintext_bytes     INTEGER NOT NULL DEFAULT 0 CHECK (plaintext_bytes >= 0),
    ciphertext_bytes    INTEGER NOT NULL DEFAULT 0 CHECK (ciphertext_bytes >= 0),
    plaintext_sha256    TEXT,
    ciphertext_sha256   TEXT,
    receipt_json        TEXT    CHECK (json_valid(receipt_json)),
    jws                 TEXT,
    -- Open: nothing of the end yet. Closed: all of it, and a cause exactly
    -- when incomplete.
    CHECK (
        (state = 'open' AND ended_at IS NULL AND complete IS NULL AND incomplete IS NULL
            AND plaintext_bytes = 0 AND ciphertext_bytes = 0
            AND plaintext_sha256 IS NULL AND ciphertext_sha256 IS NULL
            AND receipt_json IS NULL AND jws IS NULL)
        OR (state = 'closed' AND ended_at IS NOT NULL
            AND plaintext_sha256 IS NOT NULL AND ciphertext_sha256 IS NOT NULL
            AND receipt_json IS NOT NULL AND jws IS NOT NULL
            AND ((complete = 1 AND incomplete IS NULL)
                OR (complete = 0 AND incomplete IS NOT NULL)))
    )
) STRICT;

CREATE INDEX transfers_by_grant ON transfers (grant_id);

-- `open_transfers` at start: as small as the set of transfers in flight.
-- `state` leads for the same reason as in `grants_due_expiry`.
CREATE INDEX transfers_open ON transfers (state, started_at) WHERE state = 'open';
"#;

/// The audit log: each entry's exact bytes and leaf hash, and the hash of
/// every complete subtree above the leaves (`level` >= 1, `idx` counted in
/// subtrees of that level), so the root and every proof are O(log n) lookups.
/// Rows are only ever inserted.
const V3_AUDIT: &str = r#"
CREATE TABLE audit_entries (
    idx     INTEGER NOT NULL PRIMARY KEY CHECK (idx >= 0),
    at      INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    entry   BLOB    NOT NULL,
    leaf    BLOB    NOT NULL CHECK (length(leaf) = 32)
) STRICT;

CREATE TABLE audit_nodes (
    level   INTEGER NOT NULL CHECK (level >= 1),
    idx     INTEGER NOT NULL CHECK (idx >= 0),
    hash    BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) STRICT, WITHOUT ROWID;
"#;

/// Version 4: the outbox of data-subject notices, one per grant.
///
/// A row is inserted `pending` in the transaction that issues its grant,
/// with `next_attempt_at = due_at`; each failed attempt counts in `attempts`
/// and moves `next_attempt_at` on; the 2xx answer makes it `delivered`,
/// once. `id` is also the idempotency key the receiver sees. The columns
/// the webhook body needs beyond these (grantee, scope, issue and expiry)
/// are read from the grant. Grants issued before this version get no row:
/// no deferral was ever decided for them, and notifying their subjects on
/// upgrade could expose investigations that must stay secret.
const V4_NOTICES: &str = r#"
CREATE TABLE notices (
    id                TEXT    NOT NULL PRIMARY KEY,
    grant_id          TEXT    NOT NULL UNIQUE REFERENCES grants (id),
    request_id        TEXT    NOT NULL REFERENCES requests (id),
    due_at            INTEGER NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'delivered')),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   INTEGER NOT NULL,
    last_attempt_at   INTEGER,
    last_error        TEXT,
    delivered_at      INTEGER,
    status            INTEGER CHECK (status BETWEEN 200 AND 299),
    -- Never attempted before it is due; an attempt has a time.
    CHECK (next_attempt_at >= due_at),
    CHECK ((attempts = 0) = (last_attempt_at IS NULL)),
    -- Pending: no delivery yet. Delivered: when, the answer, and an attempt.
    CHECK (
        (state = 'pending' AND delivered_at IS NULL AND status IS NULL)
        OR (state = 'delivered' AND delivered_at IS NOT NULL AND status IS NOT NULL
            AND attempts >= 1)
    )
) STRICT;

-- The notifier: `next_notice_due` and `due_notices` read only pending rows.
-- `state` leads for the same reason as in `grants_due_expiry`.
CREATE INDEX notices_due ON notices (state, next_attempt_at) WHERE state = 'pending';
-- `notices(Some(state))`, in the order they fall due.
CREATE INDEX notices_by_state ON notices (state, due_at);
"#;
