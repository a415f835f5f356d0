//! The schema and its upgrades. The schema is versioned with `PRAGMA user_version`:
//! `MIGRATIONS[i]` takes the file from version `i` to `i + 1`, each in its own transaction.
//! Append to the list, never edit an entry that has shipped: files written by every earlier
//! guardian must still open and read (the tests here start from old versions).

use rusqlite::{params, Connection, TransactionBehavior};

use super::{Doing, Result, Store, StoreError};

/// Schema migrations, applied in order; the file's `user_version` is how many have been applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: changes, the decision log, source positions.
    r#"
    CREATE TABLE changes (
        id          TEXT PRIMARY KEY,
        commit_sha  TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('ai', 'human')),
        pattern     TEXT,
        summary     TEXT,
        landed_at   REAL NOT NULL,  -- unix seconds
        state       TEXT NOT NULL,
        updated_at  REAL NOT NULL,
        decided_at  REAL,
        report      TEXT,           -- JSON of the core's Report, latest
        note        TEXT
    );
    CREATE INDEX changes_by_landed_at ON changes (landed_at);
    CREATE INDEX changes_by_state ON changes (state);

    CREATE TABLE events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        at         REAL NOT NULL,
        change_id  TEXT REFERENCES changes (id),
        kind       TEXT NOT NULL,
        detail     TEXT NOT NULL    -- JSON
    );
    CREATE INDEX events_by_change ON events (change_id, seq);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN
        SELECT RAISE(ABORT, 'events are append-only');
    END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN
        SELECT RAISE(ABORT, 'events are append-only');
    END;

    CREATE TABLE source_positions (
        name        TEXT PRIMARY KEY,
        file_id     INTEGER NOT NULL,  -- u64 bit-cast to i64
        offset      INTEGER NOT NULL,  -- u64 bit-cast to i64
        updated_at  REAL NOT NULL
    );
    "#,
    // 2: the outbox, alerts waiting for (or done with) delivery. Rows are never deleted: a sent
    // email keeps its sent_at, one that cannot be sent stays queued and visible.
    r#"
    CREATE TABLE outbox (
        message_id       TEXT PRIMARY KEY,   -- the Message-ID header, angle brackets included
        change_id        TEXT REFERENCES changes (id),
        subject          TEXT NOT NULL,
        body             TEXT NOT NULL,
        recipients       TEXT NOT NULL,      -- JSON array of addresses
        created_at       REAL NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  REAL NOT NULL,
        last_attempt_at  REAL,
        last_error       TEXT,
        sent_at          REAL
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL;
    CREATE TRIGGER outbox_no_delete BEFORE DELETE ON outbox
    BEGIN
        SELECT RAISE(ABORT, 'emails are never deleted from the outbox');
    END;
    "#,
    // 3: the trust gate. Proposals (changes submitted instead of deployed, with the policy's
    // decision), one-time approval links, and the traffic series behind post-mortem charts.
    r#"
    CREATE TABLE proposals (
        id            TEXT PRIMARY KEY,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        proposer      TEXT NOT NULL,          -- the role that submitted it
        kind          TEXT NOT NULL CHECK (kind IN ('ai', 'human')),
        pattern       TEXT NOT NULL,
        summary       TEXT NOT NULL,
        issue_url     TEXT,
        tests_run     INTEGER NOT NULL,       -- 0/1, as the proposer claims
        base_sha      TEXT NOT NULL,          -- the commit the patch applies to
        claimed_sha   TEXT,                   -- the commit in the proposer's repository
        patch         TEXT NOT NULL,          -- git format-patch output, as received
        diff_hash     TEXT NOT NULL,          -- sha256 of the patch
        decision      TEXT NOT NULL CHECK (decision IN ('deny', 'needs_approval', 'auto')),
        assessment    TEXT NOT NULL,          -- JSON: rules fired, risk factors, diff facts
        shadow        INTEGER NOT NULL,       -- 0/1: decided but never acted on
        state         TEXT NOT NULL,
        decided_by    TEXT,                   -- who approved or rejected
        decided_note  TEXT,
        approved_hash TEXT,                   -- the diff_hash an approval bound to
        change_id     TEXT REFERENCES changes (id),
        note          TEXT
    );
    CREATE INDEX proposals_by_created_at ON proposals (created_at);
    CREATE INDEX proposals_by_pattern ON proposals (pattern, created_at);

    CREATE TABLE approval_links (
        token_hash  TEXT PRIMARY KEY,          -- sha256 of the secret in the link
        proposal_id TEXT NOT NULL REFERENCES proposals (id),
        action      TEXT NOT NULL CHECK (action IN ('approve', 'reject')),
        diff_hash   TEXT NOT NULL,
        expires_at  REAL NOT NULL,
        used_at     REAL
    );

    CREATE TABLE series (
        at          INTEGER PRIMARY KEY,       -- start of a 10-second bin, unix seconds
        requests    INTEGER NOT NULL,
        errors      INTEGER NOT NULL,
        p50_ms      REAL,
        p99_ms      REAL
    );

    -- An alert can carry an HTML alternative (the post-mortem with its chart).
    ALTER TABLE outbox ADD COLUMN html TEXT;
    "#,
    // 4: the decision log becomes the audit chain: who caused each record, what it is about
    // when that is not a change, and the hash chain (see `src/audit/`). The rows already
    // there are chained by `chain_existing_events` in the same transaction, with the update
    // trigger dropped for that step only and then created again.
    r#"
    ALTER TABLE events ADD COLUMN actor TEXT;
    ALTER TABLE events ADD COLUMN subject TEXT;
    ALTER TABLE events ADD COLUMN prev_hash BLOB;
    ALTER TABLE events ADD COLUMN hash BLOB;
    CREATE INDEX events_by_kind ON events (kind, seq);
    DROP TRIGGER events_no_update;
    -- A row written around the store (no hash) would break the chain for every row after it.
    CREATE TRIGGER events_chained BEFORE INSERT ON events WHEN NEW.hash IS NULL
    BEGIN
        SELECT RAISE(ABORT, 'events are appended through the store, which chains them');
    END;
    "#,
    // 5: reads that cost the same however long the record grows. Each proposal's outcome as the
    // trust ledger reads it, and a tally of proposals by pattern, state, outcome and approval,
    // both kept in the same transaction as every write that changes them (`gate::proposals`);
    // indexes for the deploy queue, the ledger and a change's proposal. And approval links
    // whose secret is stored nowhere: each link has an id, its secret is derived from the id
    // with a key kept in a file, and the outbox holds the email with the id, filled in when
    // it is sent (`gate::links`). The existing proposals are tallied by
    // `gate::proposals::tally_existing` in the same transaction.
    r#"
    ALTER TABLE proposals ADD COLUMN outcome TEXT;
    CREATE TABLE proposal_tally (
        pattern   TEXT NOT NULL,
        state     TEXT NOT NULL,
        outcome   TEXT NOT NULL,
        approved  INTEGER NOT NULL,   -- 0/1: a person approved it
        n         INTEGER NOT NULL,
        PRIMARY KEY (pattern, state, outcome, approved)
    ) WITHOUT ROWID;
    CREATE INDEX proposals_by_state ON proposals (state, created_at);
    CREATE INDEX proposals_by_change ON proposals (change_id) WHERE change_id IS NOT NULL;
    CREATE INDEX proposals_by_outcome ON proposals (pattern, outcome, created_at, id);
    CREATE INDEX proposals_earning ON proposals (pattern, created_at, id, outcome, approved_hash)
        WHERE outcome = 'healthy' AND approved_hash IS NOT NULL;
    ALTER TABLE approval_links ADD COLUMN link_id TEXT;
    CREATE UNIQUE INDEX approval_links_by_id ON approval_links (link_id);
    ALTER TABLE outbox ADD COLUMN links TEXT;  -- JSON array of the approval link ids in the body
    "#,
    // 6: the gate judges the tree git makes of a proposal, and deploys exactly that tree: its
    // id is stored with the decision, and an approval binds to it as well as to the diff.
    r#"
    ALTER TABLE proposals ADD COLUMN tree_sha TEXT;       -- the tree judged (NULL: refused unread)
    ALTER TABLE proposals ADD COLUMN approved_tree TEXT;  -- the tree_sha an approval bound to
    "#,
    // 7: Sentry's webhooks. A delivery's body is remembered a day (`sentry::REPLAY_WINDOW_SECS`)
    // so that it is processed once; issues as Sentry last described them; events per issue
    // counted in 10-second bins (Sentry sends one delivery per event).
    r#"
    CREATE TABLE sentry_deliveries (
        body_sha256  TEXT PRIMARY KEY,
        request_id   TEXT,
        resource     TEXT NOT NULL,
        received_at  REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sentry_deliveries_by_time ON sentry_deliveries (received_at);
    CREATE INDEX sentry_deliveries_by_request ON sentry_deliveries (request_id)
        WHERE request_id IS NOT NULL;
    CREATE TABLE sentry_issues (
        id          TEXT PRIMARY KEY,
        short_id    TEXT,
        title       TEXT NOT NULL,
        culprit     TEXT,
        level       TEXT,
        status      TEXT,
        substatus   TEXT,
        project     TEXT,
        web_url     TEXT,
        first_seen  REAL NOT NULL,
        last_seen   REAL,
        count       INTEGER,
        files       TEXT NOT NULL,  -- JSON array of paths, newest frame first
        updated_at  REAL NOT NULL
    );
    CREATE INDEX sentry_issues_by_first_seen ON sentry_issues (first_seen);
    CREATE TABLE sentry_event_ids (  -- an event is counted once, whichever deliveries tell it
        event_id     TEXT PRIMARY KEY,
        received_at  REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sentry_event_ids_by_time ON sentry_event_ids (received_at);
    CREATE TABLE sentry_events (
        issue_id  TEXT NOT NULL,
        bin       INTEGER NOT NULL,  -- floor(unix seconds / 10)
        events    INTEGER NOT NULL,
        PRIMARY KEY (issue_id, bin)
    ) WITHOUT ROWID;
    CREATE INDEX sentry_events_by_bin ON sentry_events (bin);
    "#,
    // 8: a change may claim to fix a Sentry issue (a proposal's `issue`, `notify --issue`):
    // the watch judges it on that issue's events too, and a fix that did not fix it is
    // `ineffective` in the trust ledger.
    r#"
    ALTER TABLE changes ADD COLUMN fixes_issue TEXT;
    ALTER TABLE proposals ADD COLUMN sentry_issue TEXT;
    "#,
    // 9: the agent's runs on Sentry's issues (`[daemon.agent]`). A run without `ended_at` was
    // under way when guardian stopped; the next start records it as cut short.
    r#"
    CREATE TABLE agent_runs (
        id          TEXT PRIMARY KEY,  -- agr_ and 12 hex digits
        issue_id    TEXT NOT NULL,
        reason      TEXT NOT NULL,     -- new, reappeared
        started_at  REAL NOT NULL,
        ended_at    REAL,
        outcome     TEXT               -- exited, timed_out, failed, cut_short
    );
    CREATE INDEX agent_runs_by_issue ON agent_runs (issue_id, started_at);
    CREATE INDEX agent_runs_by_start ON agent_runs (started_at);
    CREATE INDEX agent_runs_unfinished ON agent_runs (started_at) WHERE ended_at IS NULL;
    "#,
    // 10: Sentry's API polled beside its webhooks. Each event remembered by id now keeps its issue,
    // its time and its release (events per release), and whether the API or a webhook told it;
    // an issue says whether it was learned from the API (`source = 'api'`) or a delivery.
    r#"
    ALTER TABLE sentry_event_ids ADD COLUMN issue_id TEXT;
    ALTER TABLE sentry_event_ids ADD COLUMN at REAL;
    ALTER TABLE sentry_event_ids ADD COLUMN release TEXT;
    ALTER TABLE sentry_event_ids ADD COLUMN source TEXT;  -- webhook, api
    CREATE INDEX sentry_event_ids_by_at ON sentry_event_ids (at) WHERE at IS NOT NULL;
    ALTER TABLE sentry_issues ADD COLUMN source TEXT;     -- webhook (or NULL), api
    "#,
    // 11: a change may declare the feature flag it is behind (`notify --flag`, a proposal's
    // `flag`), and the flag_off actions (`[daemon.flag_off]`): each attempt, who asked, how it
    // ended. One `running` has no `ended_at`: at start, it was cut short by a stop.
    r#"
    ALTER TABLE changes ADD COLUMN flag TEXT;
    ALTER TABLE proposals ADD COLUMN flag TEXT;
    CREATE TABLE flag_actions (
        id            TEXT PRIMARY KEY,  -- flg_ and 12 hex digits
        flag          TEXT NOT NULL,
        change_id     TEXT,              -- NULL: asked for through the API
        requested_by  TEXT NOT NULL,     -- guardian, agent, approver:NAME, admin
        reason        TEXT NOT NULL,
        started_at    REAL NOT NULL,
        ended_at      REAL,
        outcome       TEXT NOT NULL,     -- running, verified, did_not_help, failed, shadow,
                                         -- refused, done, cut_short
        note          TEXT
    );
    CREATE INDEX flag_actions_by_start ON flag_actions (started_at);
    CREATE INDEX flag_actions_running ON flag_actions (change_id) WHERE outcome = 'running';
    "#,
    // 12: the notifications' outbox (`[[daemon.notify]]`), as durable as the email outbox: one
    // row per change state and target, retried until the target accepts it, never deleted.
    r#"
    CREATE TABLE notifications (
        id               TEXT PRIMARY KEY,  -- <change id>.<state>.<target>
        target           TEXT NOT NULL,
        change_id        TEXT,
        state            TEXT NOT NULL,
        body             TEXT NOT NULL,     -- the request's JSON, as it is sent
        created_at       REAL NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  REAL NOT NULL,
        last_attempt_at  REAL,
        last_error       TEXT,
        sent_at          REAL
    );
    CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE sent_at IS NULL;
    "#,
];

/// The schema version after which proposals recorded before the tally (version 5) are counted
/// into it: the first with every column today's count reads (8: a change's claim). Counting
/// is idempotent (only proposals with no outcome yet), so a file already counted is left as is.
const TALLY_SCHEMA_VERSION: i64 = 8;

/// The schema version that brought the audit chain (`guardian audit verify` needs it).
pub const AUDIT_SCHEMA_VERSION: i64 = 4;

/// The update trigger on `events`, as migration 1 made it (migration 4 drops it while it
/// chains the existing rows, then makes it again).
const EVENTS_NO_UPDATE: &str = "
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN
        SELECT RAISE(ABORT, 'events are append-only');
    END;";

impl Store {
    /// Applies the migrations the file has not seen, each in its own transaction. Taking the
    /// write lock before reading the version keeps two processes from applying one twice.
    pub(super) fn migrate(&mut self) -> Result<()> {
        let shown = self.path.display().to_string();
        loop {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(|| format!("migrating state database {shown}"))?;
            let version: i64 = tx
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .doing(|| format!("reading schema version of {shown}"))?;
            let applied = usize::try_from(version).map_err(|_| {
                StoreError::Corrupt(format!("{shown}: negative schema version {version}"))
            })?;
            if applied > MIGRATIONS.len() {
                return Err(StoreError::SchemaTooNew {
                    path: self.path.clone(),
                    found: version,
                    known: MIGRATIONS.len(),
                });
            }
            let Some(sql) = MIGRATIONS.get(applied) else {
                return Ok(());
            };
            let next = applied + 1;
            let doing = || format!("migrating {shown} to schema version {next}");
            tx.execute_batch(sql).doing(doing)?;
            if next as i64 == AUDIT_SCHEMA_VERSION {
                chain_existing_events(&tx).doing(doing)?;
            }
            if next as i64 == TALLY_SCHEMA_VERSION {
                crate::gate::proposals::tally_existing(&tx).doing(doing)?;
            }
            tx.pragma_update(None, "user_version", next as i64)
                .doing(doing)?;
            tx.commit().doing(doing)?;
        }
    }
}

/// Migration 4's Rust step: gives every record written before the chain existed the actor
/// `guardian` and its place in the chain, in seq order, hashing the bytes as stored. Runs
/// while the update trigger is dropped, and makes it again.
fn chain_existing_events(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::types::ValueRef;
    /// seq, at, change_id, kind, detail: the bytes as stored.
    type Stored = (i64, f64, Option<Vec<u8>>, Vec<u8>, Vec<u8>);
    let rows: Vec<Stored> = {
        let mut stmt =
            conn.prepare("SELECT seq, at, change_id, kind, detail FROM events ORDER BY seq")?;
        let bytes = |v: ValueRef<'_>| -> Option<Vec<u8>> {
            match v {
                ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.to_vec()),
                _ => None,
            }
        };
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                bytes(row.get_ref(2)?),
                bytes(row.get_ref(3)?).unwrap_or_default(),
                bytes(row.get_ref(4)?).unwrap_or_default(),
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut prev = crate::audit::GENESIS.to_vec();
    for (seq, at, change_id, kind, detail) in rows {
        let hash = crate::audit::record_hash(
            seq,
            &prev,
            &crate::audit::RecordFields {
                at,
                kind: &kind,
                change_id: change_id.as_deref(),
                subject: None,
                actor: Some(crate::audit::ACTOR_GUARDIAN.as_bytes()),
                detail: &detail,
            },
        );
        conn.execute(
            "UPDATE events SET actor = ?2, prev_hash = ?3, hash = ?4 WHERE seq = ?1",
            params![seq, crate::audit::ACTOR_GUARDIAN, prev, &hash[..]],
        )?;
        prev = hash.to_vec();
    }
    conn.execute_batch(EVENTS_NO_UPDATE)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::store::testing::*;

    #[test]
    fn an_upgraded_database_chains_the_records_it_already_had() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.db");
        // A file at schema version 3 with a decision log, as the last guardian left it.
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute_batch(
                "INSERT INTO changes (id, commit_sha, kind, landed_at, state, updated_at) \
                 VALUES ('chg_000000000001', 'abc', 'ai', 1.5, 'watching', 1.5); \
                 INSERT INTO events (at, change_id, kind, detail) \
                 VALUES (1.5, 'chg_000000000001', 'change_created', '{\"commit\":\"abc\"}'); \
                 INSERT INTO events (at, change_id, kind, detail) \
                 VALUES (2.25, NULL, 'email_queued', '{ \"odd\" : 1 }');",
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let v = verify(&store);
        assert!(v.intact(), "{}", v.render());
        assert_eq!(v.records, 2);
        // New records follow on; the log is still append-only.
        store
            .audit(
                "admin",
                crate::store::EventKind::PolicyLoaded,
                None,
                None,
                &serde_json::json!({}),
                T0,
            )
            .unwrap();
        let v = verify(&store);
        assert!(v.intact(), "{}", v.render());
        assert_eq!(v.records, 3);
        assert!(store
            .conn
            .execute("UPDATE events SET actor = 'x'", [])
            .is_err());
        assert!(store.conn.execute("DELETE FROM events", []).is_err());
        // Nor can a row be slipped in without its place in the chain.
        let err = store
            .conn
            .execute(
                "INSERT INTO events (at, kind, detail) VALUES (1.0, 'forged', '{}')",
                [],
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("appended through the store"),
            "{err}"
        );
        assert_eq!(event_count(&store), 3);
    }

    #[test]
    fn the_outbox_survives_a_reopen_and_old_files_gain_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.db");
        // A file at schema version 1, as the first guardian left it.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        {
            let mut store = Store::open(&path).unwrap();
            let id = store.insert_change(&change("a", T0), T0).unwrap().id;
            store
                .enqueue_email(
                    Some(&id),
                    "<m@guardian>",
                    "s",
                    "b",
                    &to(&["x@example.com"]),
                    T0,
                )
                .unwrap();
            store
                .mark_failed("<m@guardian>", "refused", T0 + 30.0, T0)
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let email = store.get_email("<m@guardian>").unwrap().unwrap();
        assert_eq!((email.attempts, email.next_attempt_at), (1, T0 + 30.0));
        assert_eq!(email.to, ["x@example.com"]);
        assert_eq!(store.pending_emails().unwrap(), 1);
    }
}
