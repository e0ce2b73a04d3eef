//! The durable store of one node, in one `redb` file (`raft.redb` in the
//! data directory): the Raft log, the vote, the committed log id, the last
//! purged log id, the latest snapshot (the state machine's durable form),
//! and the node id and cluster name the directory belongs to.
//!
//! Every `redb` call runs on the blocking pool ([`blocking`]), never on the
//! async threads. Log appends and the vote are committed with
//! `Durability::Immediate` (fsync) before openraft is told they are done,
//! so a node killed at any instant restarts with every entry and vote it
//! acknowledged. The committed log id is written without a flush: losing
//! it only makes the node learn it again from the leader.
//!
//! [`LogStore`] is openraft's v2 log storage over this file.

use super::{RaftEntry, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(LOG)?;
            for (index, bytes) in entries {
                table.insert(*index, bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes the entries from `from` on (a conflict) or up to `upto`
    /// included (a purge, recording the purged log id first).
    fn remove(&self, from: Option<u64>, purged: Option<LogId<u64>>) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            if let Some(p) = &purged {
                let bytes = encode(PURGED, p)?;
                txn.open_table(META)?.insert(PURGED, bytes.as_slice())?;
            }
            let mut table = txn.open_table(LOG)?;
            if let Some(from) = from {
                table.retain_in(from.., |_, _| false)?;
            }
            if let Some(p) = purged {
                table.retain_in(..=p.index, |_, _| false)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

fn io_error(e: &StoreError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// openraft's log storage over a [`Store`]; clones share the file.
#[derive(Debug, Clone)]
pub struct LogStore {
    store: Store,
}

impl LogStore {
    /// The log of `store`.
    pub fn new(store: Store) -> LogStore {
        LogStore { store }
    }
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
        let store = self.store.clone();
        blocking(move || store.entries(start, end))
            .await
            .map_err(read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let store = self.store.clone();
        blocking(move || {
            let purged: Option<LogId<u64>> = store.get(PURGED)?;
            let last = store.last_entry()?.map(|e| e.log_id).or(purged);
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
        let store = self.store.clone();
        let vote = *vote;
        blocking(move || store.put(VOTE, &vote, Durability::Immediate))
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
        let store = self.store.clone();
        blocking(move || store.put(COMMITTED, &committed, Durability::None))
            .await
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
        for e in entries {
            match encode("log entry", &e) {
                Ok(bytes) => encoded.push((e.log_id.index, bytes)),
                Err(err) => {
                    callback.log_io_completed(Err(io_error(&err)));
                    return Err(write_logs(err));
                }
            }
        }
        let store = self.store.clone();
        match blocking(move || store.append(&encoded)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(err) => {
                callback.log_io_completed(Err(io_error(&err)));
                Err(write_logs(err))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "truncating the log");
        let store = self.store.clone();
        blocking(move || store.remove(Some(log_id.index), None))
            .await
            .map_err(write_logs)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "purging the log");
        let store = self.store.clone();
        blocking(move || store.remove(None, Some(log_id)))
            .await
            .map_err(write_logs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_store_of_another_node_is_refused() {
        let tmp = rpc_testkit::TestDir::new().unwrap();
        let d = tmp.path().join("data");
        drop(Store::open(&d, 1, "a").unwrap());
        assert!(Store::open(&d, 1, "a").is_ok());
        match Store::open(&d, 2, "a") {
            Err(StoreError::WrongNode {
                found: 1,
                expected: 2,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_store_of_another_cluster_is_refused() {
        let tmp = rpc_testkit::TestDir::new().unwrap();
        let d = tmp.path().join("data");
        drop(Store::open(&d, 1, "blue").unwrap());
        let e = Store::open(&d, 1, "green").unwrap_err();
        match &e {
            StoreError::WrongCluster {
                found, expected, ..
            } => assert_eq!((found.as_str(), expected.as_str()), ("blue", "green")),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("belongs to cluster \"blue\""), "{e}");
        assert!(Store::open(&d, 1, "blue").is_ok());
    }

    #[test]
    fn a_corrupt_file_is_an_error_and_is_left_as_it_was() {
        let tmp = rpc_testkit::TestDir::new().unwrap();
        let d = tmp.path().to_path_buf();
        let junk = vec![0xa5u8; 8192];
        std::fs::write(d.join(FILE), &junk).unwrap();
        let e = Store::open(&d, 1, "a").unwrap_err();
        assert!(matches!(e, StoreError::Open { .. }), "{e:?}");
        assert_eq!(std::fs::read(d.join(FILE)).unwrap(), junk);
    }
}
