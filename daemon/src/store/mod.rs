//! What cusaxd keeps on disk, in `$XDG_DATA_HOME/cusax/` (mode 0700): the SIP instance URN
//! ([`instance`]) and, in SQLite, the message history with its outbox ([`history`]).
//!
//! The database belongs to one actor, [`spawn`]ed on a thread of its own (SQLite blocks, and
//! an fsync must not stall the runtime's only thread). Others reach it through a
//! [`StoreHandle`]; every write is committed before its reply is sent, so a caller that got
//! `Ok` may tell the user the message is safe. Commits go to SQLite's write-ahead log; the
//! actor copies the log into the database once no command has come for
//! [`QUIET_BEFORE_CHECKPOINT`], so that no message waits for that copy.

pub mod history;
mod instance;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

pub use history::{Direction, History, HistoryFilter, NewMessage, Status, StoreError, StoredMessage};
pub use instance::instance_id;

/// The history database's file name under the data directory.
pub const HISTORY_FILE: &str = "history.sqlite";

/// `$XDG_DATA_HOME/cusax`, or `None` without a home directory.
pub fn data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("org", "cusax", "cusax").map(|dirs| dirs.data_dir().to_path_buf())
}

/// How long the store waits without a command after a write before it checkpoints.
pub const QUIET_BEFORE_CHECKPOINT: Duration = Duration::from_secs(1);

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

#[derive(Debug)]
enum StoreCommand {
    Insert { account: String, message: Box<NewMessage>, reply: Reply<Option<StoredMessage>> },
    Outbox { account: String, reply: Reply<Vec<StoredMessage>> },
    Advance { account: String, peer: String, uid: String, status: Status, reply: Reply<bool> },
    Query { account: String, filter: HistoryFilter, reply: Reply<Vec<StoredMessage>> },
    State { account: String, key: &'static str, reply: Reply<Option<String>> },
    SetState { account: String, key: &'static str, value: String, reply: Reply<()> },
}

/// A cheap, cloneable way to the store. Every method waits for the commit.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    commands: mpsc::Sender<StoreCommand>,
}

/// Opens the history in `dir` (created 0700) and starts its actor.
pub fn spawn(dir: &Path) -> Result<StoreHandle, StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    let path = dir.join(HISTORY_FILE);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Directory { path: dir.display().to_string(), source })?;
    let history = History::open(&path)?;
    Ok(spawn_with(history))
}

/// Starts the actor on a database that is already open.
pub fn spawn_with(mut history: History) -> StoreHandle {
    let (commands, mut queue) = mpsc::channel(256);
    std::thread::Builder::new()
        .name("store".into())
        .spawn(move || {
            // A runtime of the thread's own, for the one timer it needs: a checkpoint after
            // a quiet second.
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    warn!(error = %e, "cannot start the store's timer");
                    return;
                }
            };
            runtime.block_on(async move {
                let mut wrote = false;
                loop {
                    let command: Option<StoreCommand> = if wrote {
                        match tokio::time::timeout(QUIET_BEFORE_CHECKPOINT, queue.recv()).await {
                            Ok(command) => command,
                            Err(_) => {
                                if let Err(e) = history.checkpoint() {
                                    warn!(error = %e, "checkpoint of the message store failed");
                                }
                                wrote = false;
                                continue;
                            }
                        }
                    } else {
                        queue.recv().await
                    };
                    let Some(command) = command else { break };
                    wrote |= command.writes();
                    serve(&mut history, command);
                }
            });
        })
        .map_err(|e| warn!(error = %e, "cannot start the store thread"))
        .ok();
    StoreHandle { commands }
}

impl StoreCommand {
    fn writes(&self) -> bool {
        !matches!(self, Self::Outbox { .. } | Self::Query { .. } | Self::State { .. })
    }
}

fn serve(history: &mut History, command: StoreCommand) {
    // A caller that stopped waiting is no reason to undo a commit.
    match command {
        StoreCommand::Insert { account, message, reply } => {
            let _ = reply.send(history.insert(&account, &message));
        }
        StoreCommand::Outbox { account, reply } => {
            let _ = reply.send(history.outbox(&account));
        }
        StoreCommand::Advance { account, peer, uid, status, reply } => {
            let _ = reply.send(history.advance(&account, &peer, &uid, status));
        }
        StoreCommand::Query { account, filter, reply } => {
            let _ = reply.send(history.query(&account, &filter));
        }
        StoreCommand::State { account, key, reply } => {
            let _ = reply.send(history.state(&account, key));
        }
        StoreCommand::SetState { account, key, value, reply } => {
            let _ = reply.send(history.set_state(&account, key, &value));
        }
    }
}

impl StoreHandle {
    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> StoreCommand) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Records a message; `None` when it is a duplicate of one kept already.
    pub async fn insert(
        &self,
        account: &str,
        message: NewMessage,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let account = account.to_owned();
        self.ask(|reply| StoreCommand::Insert { account, message: Box::new(message), reply }).await
    }

    pub async fn outbox(&self, account: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let account = account.to_owned();
        self.ask(|reply| StoreCommand::Outbox { account, reply }).await
    }

    /// See [`History::advance`].
    pub async fn advance(
        &self,
        account: &str,
        peer: &str,
        uid: &str,
        status: Status,
    ) -> Result<bool, StoreError> {
        let (account, peer, uid) = (account.to_owned(), peer.to_owned(), uid.to_owned());
        self.ask(|reply| StoreCommand::Advance { account, peer, uid, status, reply }).await
    }

    pub async fn query(
        &self,
        account: &str,
        filter: HistoryFilter,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let account = account.to_owned();
        self.ask(|reply| StoreCommand::Query { account, filter, reply }).await
    }

    pub async fn state(&self, account: &str, key: &'static str) -> Result<Option<String>, StoreError> {
        let account = account.to_owned();
        self.ask(|reply| StoreCommand::State { account, key, reply }).await
    }

    pub async fn set_state(&self, account: &str, key: &'static str, value: String) -> Result<(), StoreError> {
        let account = account.to_owned();
        self.ask(|reply| StoreCommand::SetState { account, key, value, reply }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `key` as the database file alone holds it, without the write-ahead log.
    fn in_the_file(path: &Path, key: &str) -> Option<String> {
        let copy = tempfile::tempdir().unwrap();
        let file = copy.path().join("copy.sqlite");
        std::fs::copy(path, &file).unwrap();
        History::open(&file).unwrap().state("me@example.org", key).unwrap()
    }

    #[tokio::test]
    async fn writes_reach_the_database_file_after_a_quiet_second_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = spawn(dir.path()).unwrap();
        let path = dir.path().join(HISTORY_FILE);
        store.set_state("me@example.org", "mam-last", "A1".into()).await.unwrap();
        assert_eq!(in_the_file(&path, "mam-last"), None, "checkpointed within the commit");
        let start = std::time::Instant::now();
        while in_the_file(&path, "mam-last").is_none() {
            assert!(start.elapsed() < QUIET_BEFORE_CHECKPOINT * 5, "never checkpointed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(start.elapsed() >= QUIET_BEFORE_CHECKPOINT / 2, "checkpointed without a pause");
        assert_eq!(store.state("me@example.org", "mam-last").await.unwrap().as_deref(), Some("A1"));
    }
}
