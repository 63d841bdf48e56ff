//! Message history and the outbox, in one SQLite table.
//!
//! An outgoing message is a row from the moment `SendMessage` accepts it (status `queued`):
//! the outbox is simply the queued rows of an account, in insertion order. The XMPP actor
//! moves them on (`sent` on the server's XEP-0198 ack or when found in the server's archive,
//! `delivered` on a XEP-0184 receipt). Incoming messages are rows too, de-duplicated by the
//! ids XEP-0359 gives them, so that a message seen live, from offline storage, from a carbon
//! and from the archive is kept once.
//!
//! The database runs in WAL mode with `synchronous = FULL`: a row that was written is there
//! after `kill -9` and after a power cut.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

/// The schema this code writes; older files are migrated by [`History::open`].
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq        INTEGER PRIMARY KEY,
    uid        TEXT NOT NULL UNIQUE,
    account    TEXT NOT NULL,
    peer       TEXT NOT NULL,
    direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    thread     TEXT,
    body       TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    -- The order: by second, then by arrival. Servers stamp delayed messages to the second
    -- (XEP-0082 makes fractions optional), so a message stored offline at 12:00:01.000 and one
    -- received live at 12:00:01.355 keep the order they were sent in.
    at_s       INTEGER NOT NULL,
    status     TEXT NOT NULL,
    stanza_id  TEXT,
    origin_id  TEXT,
    message_id TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_peer ON messages (account, peer, at_s, seq);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (account, at_s, seq);
CREATE INDEX IF NOT EXISTS messages_outbox ON messages (account, seq) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS messages_by_stanza_id ON messages (account, stanza_id) WHERE stanza_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_origin_id ON messages (account, peer, origin_id) WHERE origin_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS account_state (
    account TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (account, key)
);
";

/// The largest page [`History::query`] returns.
pub const MAX_PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("the message store {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error(
        "the message store was written by a newer cusaxd (schema {found}, this one knows {SCHEMA_VERSION})"
    )]
    NewerSchema { found: i64 },
    #[error("the message store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the message store is closed")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// Where a message stands. Outgoing: queued, sent, delivered or failed; incoming: received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Queued,
    Sent,
    Delivered,
    Failed,
    Received,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Received => "received",
        }
    }

    fn parse(text: &str) -> Status {
        match text {
            "sent" => Status::Sent,
            "delivered" => Status::Delivered,
            "failed" => Status::Failed,
            "received" => Status::Received,
            _ => Status::Queued,
        }
    }
}

/// One message as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Ours: the id D-Bus shows, and for outgoing messages the stanza id and origin-id too.
    pub uid: String,
    pub peer: String,
    pub direction: Direction,
    pub thread: Option<String>,
    pub body: String,
    /// Unix time in ms: when we accepted it, or when the sender sent it (XEP-0203 delay).
    pub at_ms: i64,
    pub status: Status,
}

/// A message to record. For incoming ones (and our own, seen from another client through a
/// carbon or the archive) the XEP-0359 ids de-duplicate.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub message: StoredMessage,
    /// The server's `<stanza-id>` (by our own bare JID), which is also its archive id.
    pub stanza_id: Option<String>,
    /// The sender's `<origin-id>`.
    pub origin_id: Option<String>,
    /// The stanza's `id` attribute.
    pub message_id: Option<String>,
}

/// What [`History::query`] selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub peer: Option<String>,
    /// Only messages strictly before this time (Unix ms).
    pub before_ms: Option<i64>,
    /// Only messages at or after this time (Unix ms).
    pub after_ms: Option<i64>,
    /// At most this many (capped at [`MAX_PAGE`]); the newest ones that match.
    pub limit: u32,
}

pub struct History {
    db: Connection,
}

impl History {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open { path: path.display().to_string(), source };
        let db = Connection::open(path).map_err(open_error)?;
        Self::prepare(db).map_err(|e| match e {
            StoreError::Sqlite(source) => open_error(source),
            other => other,
        })
    }

    /// A database in memory, for unit tests and benchmarks.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::prepare(Connection::open_in_memory()?)
    }

    fn prepare(db: Connection) -> Result<Self, StoreError> {
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        // `journal_mode` answers with a row, so it is read rather than executed.
        let _mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        db.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        // The store's actor folds the log back into the database once writes pause
        // (`checkpoint`); SQLite's own checkpoint, every 1,000 pages by default, ran inside
        // whichever commit crossed the mark and held that message up (the p99 of chat
        // latency). This one is only for writes that never pause; after a burst (a long
        // archive catch-up) the log file is cut back to 4 MiB.
        db.execute_batch("PRAGMA wal_autocheckpoint = 8000; PRAGMA journal_size_limit = 4194304;")?;
        let version: i64 = db.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { found: version });
        }
        db.execute_batch(SCHEMA)?;
        db.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        Ok(Self { db })
    }

    /// Copies what the write-ahead log holds into the database file, as far as no reader
    /// holds it back.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Records a message. `Ok(None)` when it is one we have already (same server stanza-id,
    /// or the same peer's origin-id, or the same peer, id attribute and body).
    pub fn insert(&mut self, account: &str, new: &NewMessage) -> Result<Option<StoredMessage>, StoreError> {
        let tx = self.db.transaction()?;
        if is_duplicate(&tx, account, new)? {
            return Ok(None);
        }
        let message = &new.message;
        tx.execute(
            "INSERT INTO messages (uid, account, peer, direction, thread, body, at_ms, at_s, status, stanza_id, origin_id, message_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                message.uid,
                account,
                message.peer,
                message.direction.as_str(),
                message.thread,
                message.body,
                message.at_ms,
                message.at_ms.div_euclid(1000),
                message.status.as_str(),
                new.stanza_id,
                new.origin_id,
                new.message_id,
            ],
        )?;
        tx.commit()?;
        Ok(Some(message.clone()))
    }

    /// The account's outbox: its queued messages, oldest first.
    pub fn outbox(&self, account: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let mut statement = self.db.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM messages WHERE account = ?1 AND status = 'queued' ORDER BY seq"
        ))?;
        let rows = statement.query_map(params![account], row_to_message)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves an outgoing message to `status` when that is a step forward (a receipt that
    /// overtakes the server's ack still leaves it delivered). `peer` must be the message's
    /// peer: one contact cannot mark another's messages. Returns whether it changed.
    pub fn advance(
        &mut self,
        account: &str,
        peer: &str,
        uid: &str,
        status: Status,
    ) -> Result<bool, StoreError> {
        let current: Option<String> = self
            .db
            .query_row(
                "SELECT status FROM messages WHERE account = ?1 AND peer = ?2 AND uid = ?3 AND direction = 'out'",
                params![account, peer, uid],
                |row| row.get(0),
            )
            .optional()?;
        let Some(current) = current.map(|s| Status::parse(&s)) else { return Ok(false) };
        if status <= current || current == Status::Failed {
            return Ok(false);
        }
        self.db.execute(
            "UPDATE messages SET status = ?4 WHERE account = ?1 AND peer = ?2 AND uid = ?3",
            params![account, peer, uid, status.as_str()],
        )?;
        Ok(true)
    }

    /// The newest messages that match, oldest first (by second, then by arrival).
    pub fn query(&self, account: &str, filter: &HistoryFilter) -> Result<Vec<StoredMessage>, StoreError> {
        let (sql, values) = query_sql(account, filter);
        let mut statement = self.db.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(values.iter()), row_to_message)?;
        let mut page: Vec<StoredMessage> = rows.collect::<Result<_, _>>()?;
        page.reverse();
        Ok(page)
    }

    pub fn state(&self, account: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT value FROM account_state WHERE account = ?1 AND key = ?2",
                params![account, key],
                |row| row.get(0),
            )
            .optional()?)
    }

    pub fn set_state(&mut self, account: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO account_state (account, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (account, key) DO UPDATE SET value = excluded.value",
            params![account, key, value],
        )?;
        Ok(())
    }
}

const COLUMNS: &str = "uid, peer, direction, thread, body, at_ms, status";

/// The statement for one shape of filter, and its values. Only the conditions the filter
/// has are written, and each time bound is also written on `at_s`, so that SQLite walks
/// `messages_by_peer` or `messages_by_time` from the page's end and stops after `limit` rows
/// (a generic `?2 IS NULL OR peer = ?2` made it walk the time index past every other peer's
/// messages: 330 ms for a rare peer in a million messages).
fn query_sql(account: &str, filter: &HistoryFilter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql = format!("SELECT {COLUMNS} FROM messages WHERE account = ?");
    let mut values = vec![Value::Text(account.to_owned())];
    if let Some(peer) = &filter.peer {
        sql.push_str(" AND peer = ?");
        values.push(Value::Text(peer.clone()));
    }
    if let Some(before) = filter.before_ms {
        // at_s is at_ms rounded down to the second, so at_ms < before implies this.
        sql.push_str(" AND at_s <= ? AND at_ms < ?");
        values.extend([Value::Integer(before.saturating_sub(1).div_euclid(1000)), Value::Integer(before)]);
    }
    if let Some(after) = filter.after_ms {
        sql.push_str(" AND at_s >= ? AND at_ms >= ?");
        values.extend([Value::Integer(after.div_euclid(1000)), Value::Integer(after)]);
    }
    sql.push_str(" ORDER BY at_s DESC, seq DESC LIMIT ?");
    values.push(Value::Integer(filter.limit.clamp(1, MAX_PAGE).into()));
    (sql, values)
}

fn row_to_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let direction: String = row.get(2)?;
    let status: String = row.get(6)?;
    Ok(StoredMessage {
        uid: row.get(0)?,
        peer: row.get(1)?,
        direction: if direction == "in" { Direction::In } else { Direction::Out },
        thread: row.get(3)?,
        body: row.get(4)?,
        at_ms: row.get(5)?,
        status: Status::parse(&status),
    })
}

fn is_duplicate(db: &Connection, account: &str, m: &NewMessage) -> Result<bool, StoreError> {
    let found = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<bool, StoreError> {
        Ok(db.query_row(sql, params, |_| Ok(())).optional()?.is_some())
    };
    if let Some(id) = &m.stanza_id
        && found("SELECT 1 FROM messages WHERE account = ?1 AND stanza_id = ?2", &[&account, id])?
    {
        return Ok(true);
    }
    if let Some(id) = &m.origin_id
        && found(
            "SELECT 1 FROM messages WHERE account = ?1 AND peer = ?2 AND (origin_id = ?3 OR uid = ?3)",
            &[&account, &m.message.peer, id],
        )?
    {
        return Ok(true);
    }
    // Without an origin-id only the id attribute is left, and simple clients number their
    // messages from 1 each session: the body must match too.
    if let Some(id) = &m.message_id
        && found(
            "SELECT 1 FROM messages WHERE account = ?1 AND peer = ?2 AND direction = ?3 AND (message_id = ?4 OR uid = ?4) AND body = ?5",
            &[&account, &m.message.peer, &m.message.direction.as_str(), id, &m.message.body],
        )?
    {
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "alice@example.org";

    fn incoming(uid: &str, body: &str) -> NewMessage {
        NewMessage {
            message: StoredMessage {
                uid: uid.into(),
                peer: "bob@example.org".into(),
                direction: Direction::In,
                thread: Some("t1".into()),
                body: body.into(),
                at_ms: 1000,
                status: Status::Received,
            },
            stanza_id: None,
            origin_id: None,
            message_id: None,
        }
    }

    /// `new` changed by `change`.
    fn with(mut new: NewMessage, change: impl FnOnce(&mut StoredMessage)) -> NewMessage {
        change(&mut new.message);
        new
    }

    fn outgoing(uid: &str, at_ms: i64) -> NewMessage {
        let new =
            NewMessage { origin_id: Some(uid.into()), message_id: Some(uid.into()), ..incoming(uid, "hi") };
        with(new, |m| {
            m.direction = Direction::Out;
            m.status = Status::Queued;
            m.at_ms = at_ms;
        })
    }

    #[test]
    fn the_outbox_keeps_order_and_empties_as_messages_are_acked() {
        let mut h = History::in_memory().unwrap();
        for (i, uid) in ["a", "b", "c"].iter().enumerate() {
            h.insert(ME, &outgoing(uid, 10 - i as i64)).unwrap().unwrap();
        }
        let uids = |h: &History| h.outbox(ME).unwrap().into_iter().map(|m| m.uid).collect::<Vec<_>>();
        assert_eq!(uids(&h), ["a", "b", "c"], "insertion order, not timestamps");
        assert!(h.outbox("other@example.org").unwrap().is_empty());
        assert!(h.advance(ME, "bob@example.org", "b", Status::Sent).unwrap());
        assert_eq!(uids(&h), ["a", "c"]);
    }

    #[test]
    fn status_only_moves_forward_and_only_for_the_right_peer() {
        let mut h = History::in_memory().unwrap();
        h.insert(ME, &outgoing("m", 1)).unwrap();
        assert!(!h.advance(ME, "mallory@example.org", "m", Status::Delivered).unwrap());
        assert!(h.advance(ME, "bob@example.org", "m", Status::Delivered).unwrap());
        assert!(!h.advance(ME, "bob@example.org", "m", Status::Sent).unwrap(), "a late ack");
        let page = h.query(ME, &HistoryFilter { limit: 10, ..Default::default() }).unwrap();
        assert_eq!(page[0].status, Status::Delivered);
        assert!(!h.advance(ME, "bob@example.org", "nope", Status::Sent).unwrap());
    }

    #[test]
    fn a_message_seen_twice_is_kept_once() {
        let mut h = History::in_memory().unwrap();
        let live =
            NewMessage { stanza_id: Some("S1".into()), origin_id: Some("O1".into()), ..incoming("u1", "x") };
        assert!(h.insert(ME, &live).unwrap().is_some());
        let archived = NewMessage { origin_id: None, ..incoming("u2", "x") };
        let archived = NewMessage { stanza_id: Some("S1".into()), ..archived };
        assert!(h.insert(ME, &archived).unwrap().is_none(), "same stanza-id");
        let offline = NewMessage { origin_id: Some("O1".into()), ..incoming("u3", "x") };
        assert!(h.insert(ME, &offline).unwrap().is_none(), "same origin-id");
        let plain = NewMessage { message_id: Some("1".into()), ..incoming("u4", "first") };
        assert!(h.insert(ME, &plain).unwrap().is_some());
        let renumbered = NewMessage { message_id: Some("1".into()), ..incoming("u5", "other") };
        assert!(h.insert(ME, &renumbered).unwrap().is_some(), "an id reused with another body");
        let again = NewMessage { message_id: Some("1".into()), ..incoming("u6", "first") };
        assert!(h.insert(ME, &again).unwrap().is_none());
        let from_elsewhere = with(offline, |m| {
            m.peer = "carol@example.org".into();
            m.uid = "u7".into();
        });
        assert!(h.insert(ME, &from_elsewhere).unwrap().is_some(), "origin-ids are per sender");
    }

    #[test]
    fn a_query_returns_the_newest_page_oldest_first() {
        let mut h = History::in_memory().unwrap();
        for i in 0..10 {
            let peer = if i % 2 == 0 { "bob@example.org" } else { "carol@example.org" };
            let m = with(incoming(&format!("u{i}"), "b"), |m| {
                m.peer = peer.into();
                m.at_ms = i * 100;
            });
            h.insert(ME, &m).unwrap();
        }
        let page = |f: HistoryFilter| h.query(ME, &f).unwrap().into_iter().map(|m| m.uid).collect::<Vec<_>>();
        assert_eq!(page(HistoryFilter { limit: 3, ..Default::default() }), ["u7", "u8", "u9"]);
        let bob = Some("bob@example.org".to_owned());
        assert_eq!(page(HistoryFilter { peer: bob.clone(), limit: 2, ..Default::default() }), ["u6", "u8"]);
        assert_eq!(
            page(HistoryFilter { peer: bob, before_ms: Some(600), after_ms: Some(200), limit: 50 }),
            ["u2", "u4"]
        );
    }

    #[test]
    fn every_shape_of_query_walks_an_index_in_page_order() {
        let h = History::in_memory().unwrap();
        let peer = Some("bob@example.org".to_owned());
        for filter in [
            HistoryFilter { limit: 50, ..Default::default() },
            HistoryFilter { peer: peer.clone(), limit: 50, ..Default::default() },
            HistoryFilter { peer: peer.clone(), before_ms: Some(-1), limit: 50, ..Default::default() },
            HistoryFilter { peer: peer.clone(), after_ms: Some(1_000), limit: 50, ..Default::default() },
            HistoryFilter { after_ms: Some(1_000), limit: 50, ..Default::default() },
            HistoryFilter { peer, before_ms: Some(9_000), after_ms: Some(i64::MIN), limit: 50 },
            HistoryFilter {
                before_ms: Some(i64::MIN),
                after_ms: Some(i64::MAX),
                limit: 50,
                ..Default::default()
            },
        ] {
            let (sql, values) = query_sql(ME, &filter);
            let mut plan = h.db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let steps: Vec<String> = plan
                .query_map(rusqlite::params_from_iter(values.iter()), |row| row.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let index = if filter.peer.is_some() { "messages_by_peer" } else { "messages_by_time" };
            assert!(steps.iter().any(|s| s.contains(index)), "{filter:?}: {steps:?}");
            assert!(!steps.iter().any(|s| s.contains("TEMP B-TREE")), "{filter:?} sorts: {steps:?}");
        }
    }

    #[test]
    fn time_bounds_hold_to_the_millisecond_and_at_the_extremes() {
        let mut h = History::in_memory().unwrap();
        for (uid, at_ms) in [("a", -1_500), ("b", -1), ("c", 0), ("d", 999), ("e", 1_000), ("f", 1_001)] {
            h.insert(ME, &with(incoming(uid, "x"), |m| m.at_ms = at_ms)).unwrap();
        }
        let page = |before_ms, after_ms| {
            let filter = HistoryFilter { before_ms, after_ms, limit: 50, ..Default::default() };
            h.query(ME, &filter).unwrap().into_iter().map(|m| m.uid).collect::<Vec<_>>()
        };
        assert_eq!(page(Some(1_000), Some(-1)), ["b", "c", "d"]);
        assert_eq!(page(Some(0), None), ["a", "b"]);
        assert_eq!(page(None, Some(1_001)), ["f"]);
        assert_eq!(page(Some(-1_499), Some(-1_500)), ["a"]);
        assert!(page(Some(i64::MIN), None).is_empty());
        assert!(page(None, Some(i64::MAX)).is_empty());
        assert_eq!(page(Some(i64::MAX), Some(i64::MIN)).len(), 6);
    }

    #[test]
    fn within_a_second_arrival_order_wins_over_truncated_stamps() {
        let mut h = History::in_memory().unwrap();
        h.insert(ME, &with(incoming("live", "first"), |m| m.at_ms = 5_355)).unwrap();
        h.insert(ME, &with(incoming("offline", "second"), |m| m.at_ms = 5_000)).unwrap();
        h.insert(ME, &with(incoming("older", "before both"), |m| m.at_ms = 4_999)).unwrap();
        let page = h.query(ME, &HistoryFilter { limit: 10, ..Default::default() }).unwrap();
        let uids: Vec<&str> = page.iter().map(|m| m.uid.as_str()).collect();
        assert_eq!(uids, ["older", "live", "offline"]);
    }

    #[test]
    fn rows_survive_reopening_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        let mut h = History::open(&path).unwrap();
        h.insert(ME, &outgoing("kept", 1)).unwrap();
        h.set_state(ME, "mam-last", "A1").unwrap();
        h.set_state(ME, "mam-last", "A2").unwrap();
        drop(h);
        let h = History::open(&path).unwrap();
        assert_eq!(h.outbox(ME).unwrap()[0].uid, "kept");
        assert_eq!(h.state(ME, "mam-last").unwrap().as_deref(), Some("A2"));
        h.db.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(h);
        assert!(matches!(History::open(&path), Err(StoreError::NewerSchema { found: 99 })));
    }
}
