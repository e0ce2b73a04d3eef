//! openraft's state machine: the [`Kv`] in memory, made durable as
//! snapshots in the node's [`Store`].
//!
//! A restarted node loads its latest snapshot, and openraft applies the
//! committed log entries after it again (the log is durable and purged
//! only up to a durable snapshot), so the state machine comes back exactly
//! as it was. A snapshot is written (fsync) before openraft may purge the
//! entries it covers.

use super::kv::{Kv, Outcome};
use super::store::{self, blocking, Store, StoreError, SNAPSHOT};
use super::{RaftEntry, Response, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use redb::Durability;
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The state machine's state as the service reads it.
#[derive(Debug, Default)]
pub struct Applied {
    /// The last log id applied.
    pub last_applied: Option<LogId<u64>>,
    /// The last membership applied.
    pub membership: StoredMembership<u64, BasicNode>,
    /// The data.
    pub kv: Kv,
    /// How many snapshots this process installed from a leader (a node
    /// that fell too far behind catches up this way).
    pub snapshots_installed: u64,
}

/// The state, shared between the state machine and the service's reads.
#[derive(Debug, Clone, Default)]
pub struct SharedState(Arc<RwLock<Applied>>);

impl SharedState {
    /// Reads the state (never held across an await).
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // Every change is made by one call that leaves the state whole.
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Applied> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A snapshot as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    /// The postcard-encoded [`Kv`].
    data: Vec<u8>,
}

/// openraft's state machine over the shared state and the store.
#[derive(Debug, Clone)]
pub struct StateMachine {
    state: SharedState,
    store: Store,
}

impl StateMachine {
    /// The state machine of `store`, loaded from its latest snapshot.
    ///
    /// Blocking: call it before serving.
    ///
    /// # Errors
    /// The store's, or [`StoreError::Corrupt`] for a snapshot that cannot
    /// be decoded (the node must not start without it).
    pub fn open(store: Store) -> Result<StateMachine, StoreError> {
        let state = SharedState::default();
        if let Some(snap) = store.get::<StoredSnapshot>(SNAPSHOT)? {
            let kv: Kv = store::decode("snapshot data", &snap.data)?;
            let mut s = state.write();
            s.last_applied = snap.meta.last_log_id;
            s.membership = snap.meta.last_membership.clone();
            s.kv = kv;
            tracing::info!(last_log_id = ?snap.meta.last_log_id, keys = s.kv.map.len(), "state machine loaded from its snapshot");
        }
        Ok(StateMachine { state, store })
    }

    /// The state, for reads.
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    fn current_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        self.store.get(SNAPSHOT)
    }
}

fn snapshot_error(e: &StoreError) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, AnyError::new(e)).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (meta, data) = {
            let s = self.state.read();
            let data = store::encode("snapshot data", &s.kv).map_err(|e| snapshot_error(&e))?;
            let id = match s.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, unique()),
                None => format!("none-{}", unique()),
            };
            let meta = SnapshotMeta {
                last_log_id: s.last_applied,
                last_membership: s.membership.clone(),
                snapshot_id: id,
            };
            (meta, data)
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let store = self.store.clone();
        blocking(move || store.put(SNAPSHOT, &stored, Durability::Immediate))
            .await
            .map_err(|e| snapshot_error(&e))?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// A number that differs between snapshots of one process run and across
/// runs (nanoseconds since the epoch).
fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let s = self.state.read();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<u64>>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut s = self.state.write();
        let mut out = Vec::new();
        for entry in entries {
            s.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Nothing,
                EntryPayload::Normal(command) => s.kv.apply(command),
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(entry.log_id), m);
                    Outcome::Nothing
                }
            };
            out.push(Response { outcome });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let kv: Kv = store::decode("received snapshot", &data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let store = self.store.clone();
        // Durable first: the log before it may be purged once installed.
        blocking(move || store.put(SNAPSHOT, &stored, Durability::Immediate))
            .await
            .map_err(|e| snapshot_error(&e))?;
        let mut s = self.state.write();
        s.last_applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        s.kv = kv;
        s.snapshots_installed += 1;
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let this = self.clone();
        let snap = blocking(move || this.current_snapshot())
            .await
            .map_err(|e| {
                StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e)))
            })?;
        Ok(snap.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
