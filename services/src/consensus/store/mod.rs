//! The durable store of one node, in one `redb` file (`raft.redb` in the
//! data directory): the Raft log, the vote, the committed log id, the last
//! purged log id, the latest snapshot (the state machine's durable form),
//! and the node id and cluster name the directory belongs to.
//!
//! Every `redb` call runs off the async threads: reads on the blocking
//! pool ([`blocking`]), the log store's writes on its own writer thread.
//! Log appends and the vote are committed with `Durability::Immediate`
//! (fsync) before openraft is told they are done, so a node killed at any
//! instant restarts with every entry and vote it acknowledged.
//!
//! [`LogStore`] is openraft's v2 log storage over this file. Its writes
//! (appends, vote, committed log id, truncations, purges) go, in the order
//! openraft makes them, to one writer thread, which commits everything
//! queued in one transaction and one fsync (a group commit). openraft
//! (0.9) calls `append` once per client write, one after another; the
//! append returns as soon as the entries are queued and readable (from an
//! in-memory overlay until they are committed), and openraft is told they
//! are flushed only after the transaction holding them is durable. So the
//! writes that arrive while one fsync is under way share the next one.

use super::{RaftEntry, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{mpsc, oneshot};

/// The log: index to postcard-encoded entry.
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
/// Single records, by name (postcard-encoded values).
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// The name of the store's file in the data directory.
pub const FILE: &str = "raft.redb";

const NODE_ID: &str = "node_id";
const CLUSTER: &str = "cluster";
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
/// The latest snapshot ([`super::state_machine`]).
pub(super) const SNAPSHOT: &str = "snapshot";

/// What can go wrong with a node's store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The store's file could not be opened (unreadable, corrupt, in use
    /// by another process).
    #[error("cannot open the store {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: redb::DatabaseError,
    },
    /// The data directory belongs to another node.
    #[error("the store {path} belongs to node {found}, not to node {expected}")]
    WrongNode {
        /// The file.
        path: PathBuf,
        /// The node id recorded in it.
        found: u64,
        /// The node id this process was started with.
        expected: u64,
    },
    /// The data directory belongs to another cluster.
    #[error("the store {path} belongs to cluster {found:?}, not to cluster {expected:?}")]
    WrongCluster {
        /// The file.
        path: PathBuf,
        /// The cluster name recorded in it.
        found: String,
        /// The cluster name this process was started with.
        expected: String,
    },
    /// A read or write failed.
    #[error("store i/o failed")]
    Io(#[source] redb::Error),
    /// A record could not be decoded.
    #[error("corrupt record {what:?} in the store")]
    Corrupt {
        /// Which record.
        what: String,
        /// What the decoder said.
        #[source]
        source: postcard::Error,
    },
    /// A record could not be encoded.
    #[error("cannot encode {what}")]
    Encode {
        /// What.
        what: &'static str,
        /// What the encoder said.
        #[source]
        source: postcard::Error,
    },
    /// The blocking task running the store call failed.
    #[error("store task failed: {0}")]
    Task(String),
    /// The log store's group commit failed (every write in it is refused
    /// with this error), or its writer thread is gone.
    #[error("log store write failed: {0}")]
    Write(String),
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> StoreError {
        StoreError::Io(e.into())
    }
}

/// Runs `f` (which does blocking I/O) on the blocking pool.
///
/// # Errors
/// `f`'s, or [`StoreError::Task`] when the task panicked or was cancelled.
pub async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// Encodes a record.
pub(super) fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(v).map_err(|source| StoreError::Encode { what, source })
}

/// Decodes a record.
pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|source| StoreError::Corrupt {
        what: what.to_owned(),
        source,
    })
}

/// A node's store file, shared by its log store and state machine.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store of node `id` of cluster `cluster` in
    /// `dir`, creating `dir` if needed. A store of another node id or of
    /// another cluster is refused, so a directory is never shared by two
    /// nodes and a node never joins a cluster with another's data.
    ///
    /// Blocking: call it before serving, or through [`blocking`].
    ///
    /// # Errors
    /// [`StoreError::CreateDir`], [`StoreError::Open`] (a corrupt file is
    /// refused, never replaced), [`StoreError::WrongNode`],
    /// [`StoreError::WrongCluster`], [`StoreError::Corrupt`],
    /// [`StoreError::Io`].
    pub fn open(dir: &Path, id: u64, cluster: &str) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = Store {
            db: Arc::new(db),
            path,
        };
        match store.get::<u64>(NODE_ID)? {
            Some(found) if found != id => {
                return Err(StoreError::WrongNode {
                    path: store.path.clone(),
                    found,
                    expected: id,
                })
            }
            Some(_) => {}
            None => store.put(NODE_ID, &id, Durability::Immediate)?,
        }
        match store.get::<String>(CLUSTER)? {
            Some(found) if found != cluster => {
                return Err(StoreError::WrongCluster {
                    path: store.path.clone(),
                    found,
                    expected: cluster.to_owned(),
                })
            }
            Some(_) => {}
            None => store.put(CLUSTER, &cluster.to_owned(), Durability::Immediate)?,
        }
        Ok(store)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the record `name`.
    pub(super) fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match table.get(name)? {
            Some(v) => decode(name, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the record `name`.
    pub(super) fn put<T: Serialize>(
        &self,
        name: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let bytes = encode(name, value)?;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        {
            let mut table = txn.open_table(META)?;
            table.insert(name, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn entries(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<RaftEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for item in table.range::<u64>((start, end))? {
            let (k, v) = item?;
            let index = k.value();
            let entry: RaftEntry = decode(&format!("log entry {index}"), v.value())?;
            out.push(entry);
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<RaftEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let last = match table.last()? {
            Some((k, v)) => decode(&format!("log entry {}", k.value()), v.value()).map(Some),
            None => Ok(None),
        };
        last
    }

    /// Commits `ops`, in order, in one transaction: with one fsync, unless
    /// nobody waits for any of them (only the committed log id, which was
    /// never flushed on its own).
    fn write_batch(&self, ops: &[Op]) -> Result<(), StoreError> {
        let lazy = ops
            .iter()
            .all(|op| matches!(op, Op::Put { done: None, .. }));
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if lazy {
            Durability::None
        } else {
            Durability::Immediate
        })?;
        {
            let mut log = txn.open_table(LOG)?;
            let mut meta = txn.open_table(META)?;
            for op in ops {
                match op {
                    Op::Append { entries, .. } => {
                        for (log_id, bytes) in entries {
                            log.insert(log_id.index, bytes.as_slice())?;
                        }
                    }
                    Op::Put { name, bytes, .. } => {
                        meta.insert(*name, bytes.as_slice())?;
                    }
                    Op::Truncate { from, .. } => {
                        log.retain_in(*from.., |_, _| false)?;
                    }
                    Op::Purge { upto, bytes, .. } => {
                        // The purged log id first: a log whose head is
                        // gone always says up to where.
                        meta.insert(PURGED, bytes.as_slice())?;
                        log.retain_in(..=upto.index, |_, _| false)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// One write of the log store, queued to its writer thread.
enum Op {
    /// Log entries (index order), with their encodings; openraft is told
    /// through `callback` once they are durable.
    Append {
        entries: Vec<(LogId<u64>, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    /// A record (the vote, the committed log id), answered through `done`
    /// when there is someone waiting.
    Put {
        name: &'static str,
        bytes: Vec<u8>,
        done: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    /// Removes the entries from `from` on (a conflict).
    Truncate {
        from: u64,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Removes the entries up to `upto` included, recording it (encoded
    /// in `bytes`) as the last purged log id.
    Purge {
        upto: LogId<u64>,
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Entries appended but not yet committed, by index: what a reader sees
/// of the log on top of the file.
type Pending = Arc<Mutex<BTreeMap<u64, RaftEntry>>>;

/// The writer thread: takes every write queued, commits them in one
/// transaction, then answers each (openraft's flush callbacks last, after
/// the committed entries left the overlay).
fn writer(store: Store, pending: Pending, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut batch = Vec::new();
    // Appends and commits since the last report (evidence of grouping).
    let (mut appends, mut commits) = (0u64, 0u64);
    while let Some(op) = rx.blocking_recv() {
        batch.push(op);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = store.write_batch(&batch);
        match &result {
            Ok(()) => {
                let mut p = pending.lock().unwrap_or_else(PoisonError::into_inner);
                for op in &batch {
                    if let Op::Append { entries, .. } = op {
                        for (log_id, _) in entries {
                            if p.get(&log_id.index).is_some_and(|e| e.log_id == *log_id) {
                                p.remove(&log_id.index);
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, writes = batch.len(), "log store commit failed"),
        }
        appends += batch
            .iter()
            .filter(|op| matches!(op, Op::Append { .. }))
            .count() as u64;
        commits += 1;
        if commits == 1000 {
            tracing::debug!(appends, commits, "log store group commits");
            (appends, commits) = (0, 0);
        }
        for op in batch.drain(..) {
            let answer = result
                .as_ref()
                .copied()
                .map_err(|e| StoreError::Write(e.to_string()));
            match op {
                Op::Append { callback, .. } => {
                    callback.log_io_completed(answer.map_err(|e| io_error(&e)));
                }
                Op::Put { done: None, .. } => {}
                Op::Put {
                    done: Some(done), ..
                }
                | Op::Truncate { done, .. }
                | Op::Purge { done, .. } => {
                    // The caller may have gone (openraft shutting down).
                    let _ = done.send(answer);
                }
            }
        }
    }
    tracing::debug!("log store writer stopped");
}

fn io_error(e: &StoreError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// openraft's log storage over a [`Store`]; clones share the file, the
/// overlay of entries not yet committed, and the writer thread (which
/// stops when the last clone is dropped).
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    pending: Pending,
    tx: mpsc::UnboundedSender<Op>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Append { entries, .. } => write!(f, "Append({} entries)", entries.len()),
            Op::Put { name, .. } => write!(f, "Put({name})"),
            Op::Truncate { from, .. } => write!(f, "Truncate({from}..)"),
            Op::Purge { upto, .. } => write!(f, "Purge(..={upto})"),
        }
    }
}

impl LogStore {
    /// The log of `store`, with its writer thread.
    ///
    /// # Errors
    /// [`StoreError::Write`] when the thread cannot be started.
    pub fn new(store: Store) -> Result<LogStore, StoreError> {
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let (s, p) = (store.clone(), Arc::clone(&pending));
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer(s, p, rx))
            .map_err(|e| StoreError::Write(format!("cannot start the writer thread: {e}")))?;
        Ok(LogStore { store, pending, tx })
    }

    /// Queues `op` to the writer thread.
    fn queue(&self, op: Op) -> Result<(), StoreError> {
        self.tx
            .send(op)
            .map_err(|_| StoreError::Write("the writer thread is gone".into()))
    }

    /// Queues a write that answers through `done`, and waits for it.
    async fn write(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), StoreError>>) -> Op,
    ) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.queue(op(done))?;
        answer
            .await
            .map_err(|_| StoreError::Write("the writer thread is gone".into()))?
    }

    /// The pending entries in `start..end`.
    fn pending(&self, start: Bound<u64>, end: Bound<u64>) -> Vec<RaftEntry> {
        let p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        p.range((start, end)).map(|(_, e)| e.clone()).collect()
    }
}

/// Whether `entries` (consecutive indexes) are all of `start..end`.
fn covers(entries: &[RaftEntry], start: Bound<u64>, end: Bound<u64>) -> bool {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return false;
    };
    let start_ok = match start {
        Bound::Included(s) => first.log_id.index == s,
        Bound::Excluded(s) => Some(first.log_id.index) == s.checked_add(1),
        Bound::Unbounded => false,
    };
    let end_ok = match end {
        Bound::Included(e) => last.log_id.index == e,
        Bound::Excluded(e) => Some(last.log_id.index) == e.checked_sub(1),
        Bound::Unbounded => false,
    };
    let consecutive = u64::try_from(entries.len()).ok()
        == last
            .log_id
            .index
            .checked_sub(first.log_id.index)
            .and_then(|d| d.checked_add(1));
    start_ok && end_ok && consecutive
}

fn read_logs(e: StoreError) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_logs(e: StoreError) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, StorageError<u64>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        // The overlay first: an entry committed meanwhile has left it but
        // is then in the file.
        let pending = self.pending(start, end);
        if covers(&pending, start, end) {
            return Ok(pending);
        }
        let store = self.store.clone();
        let stored = blocking(move || store.entries(start, end))
            .await
            .map_err(read_logs)?;
        if pending.is_empty() {
            return Ok(stored);
        }
        let mut all: BTreeMap<u64, RaftEntry> =
            stored.into_iter().map(|e| (e.log_id.index, e)).collect();
        all.extend(pending.into_iter().map(|e| (e.log_id.index, e)));
        Ok(all.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let queued = self.pending(Bound::Unbounded, Bound::Unbounded);
        let queued = queued.last().map(|e| e.log_id);
        let store = self.store.clone();
        blocking(move || {
            let purged: Option<LogId<u64>> = store.get(PURGED)?;
            let last = queued.or(store.last_entry()?.map(|e| e.log_id)).or(purged);
            Ok(LogState {
                last_purged_log_id: purged,
                last_log_id: last,
            })
        })
        .await
        .map_err(read_logs)
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let bytes =
            encode(VOTE, vote).map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.write(|done| Op::Put {
            name: VOTE,
            bytes,
            done: Some(done),
        })
        .await
        .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        let store = self.store.clone();
        blocking(move || store.get(VOTE))
            .await
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Queued after the appends, so never ahead of them in the file, and
        // not waited for: losing it only makes the node learn it again
        // from the leader. A failed commit is reported to the appends and
        // writes of the same group.
        let bytes =
            encode(COMMITTED, &committed).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        self.queue(Op::Put {
            name: COMMITTED,
            bytes,
            done: None,
        })
        .map_err(|e| StorageIOError::write(AnyError::new(&e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let store = self.store.clone();
        blocking(move || Ok(store.get::<Option<LogId<u64>>>(COMMITTED)?.flatten()))
            .await
            .map_err(|e| StorageIOError::read(AnyError::new(&e)).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        let mut readable = Vec::new();
        for e in entries {
            match encode("log entry", &e) {
                Ok(bytes) => encoded.push((e.log_id, bytes)),
                Err(err) => {
                    callback.log_io_completed(Err(io_error(&err)));
                    return Err(write_logs(err));
                }
            }
            readable.push(e);
        }
        // Readable from now on (openraft replicates them at once), durable
        // when the writer thread calls `callback`.
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(readable.into_iter().map(|e| (e.log_id.index, e)));
        if let Err(Op::Append { callback, .. }) = self
            .tx
            .send(Op::Append {
                entries: encoded,
                callback,
            })
            .map_err(|e| e.0)
        {
            let err = StoreError::Write("the writer thread is gone".into());
            callback.log_io_completed(Err(io_error(&err)));
            return Err(write_logs(err));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "truncating the log");
        self.write(|done| Op::Truncate {
            from: log_id.index,
            done,
        })
        .await
        .map_err(write_logs)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "purging the log");
        let bytes = encode(PURGED, &log_id).map_err(write_logs)?;
        self.write(|done| Op::Purge {
            upto: log_id,
            bytes,
            done,
        })
        .await
        .map_err(write_logs)
    }
}

#[cfg(test)]
mod tests;
