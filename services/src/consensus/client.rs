//! [`KvClient`]: the store's client library. It knows the nodes'
//! addresses, sends each request to the node it believes is the leader,
//! follows `NotLeader` answers, and moves on to the next node when one
//! does not answer.
//!
//! A write gets a sequence number once and keeps it through every retry
//! (after a deadline, a restarted node or a new leader), so the store
//! applies it once and the retry gets the first answer. One client has one
//! write in flight at a time (its writes are serialized), which is what
//! lets the store keep only the last write per client. A write that fails
//! after every attempt may or may not have been applied
//! ([`KvClientError::GaveUp`]).

use super::kv;
use crate::ids::random_u64;
use crate::proto::consensus::v1::{
    CasRequest, DeleteRequest, GetRequest, KeyValueClient, KvError, KvErrorKind, PutRequest,
    WriteId,
};
use rpc_core::CallError;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvClientError {
    /// The store refused it (bad key or value, CAS on a missing key, ...);
    /// nothing was changed.
    #[error("refused ({kind:?}): {detail}")]
    Refused {
        /// What was wrong.
        kind: KvErrorKind,
        /// The store's words.
        detail: String,
    },
    /// The request does not fit a datagram (the key or value is over the
    /// limits, which are checked before sending).
    #[error("request too large")]
    TooLarge(#[source] rpc_core::Error),
    /// No node gave an answer in every attempt: a write may or may not
    /// have been applied.
    #[error("no answer after {attempts} attempts; last: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last failure, in words.
        last: String,
    },
}

impl KvClientError {
    /// The store's reason, when it refused.
    pub fn kind(&self) -> Option<KvErrorKind> {
        match self {
            KvClientError::Refused { kind, .. } => Some(*kind),
            KvClientError::GaveUp { .. } | KvClientError::TooLarge(_) => None,
        }
    }
}

/// A client of the store.
#[derive(Debug)]
pub struct KvClient {
    nodes: Vec<SocketAddr>,
    /// Node id to its index in `nodes`, when known ([`KvClient::with_ids`]).
    ids: BTreeMap<u64, usize>,
    leader: Mutex<usize>,
    stubs: Mutex<HashMap<SocketAddr, KeyValueClient>>,
    client_id: u64,
    seq: AtomicU64,
    writing: tokio::sync::Mutex<()>,
    attempts: u32,
    call_timeout: Duration,
}

/// What one attempt told.
enum Next {
    Leader(SocketAddr),
    LeaderAt(usize),
    Another(String),
}

impl KvClient {
    /// A client of the store whose nodes are at `nodes` (any of them, at
    /// least one), with a random client id, 40 attempts per request and
    /// 2 s per attempt.
    pub fn new(nodes: Vec<SocketAddr>) -> KvClient {
        KvClient {
            nodes,
            ids: BTreeMap::new(),
            leader: Mutex::new(0),
            stubs: Mutex::new(HashMap::new()),
            client_id: random_u64() | 1,
            seq: AtomicU64::new(0),
            writing: tokio::sync::Mutex::new(()),
            attempts: 40,
            call_timeout: Duration::from_secs(2),
        }
    }

    /// A client that knows each node by id and reaches it at the address
    /// given here, which need not be the one the cluster knows it by (a
    /// proxy in front of it): a `NotLeader` answer is followed by the
    /// leader's id.
    pub fn with_ids(nodes: BTreeMap<u64, SocketAddr>) -> KvClient {
        let mut client = KvClient::new(nodes.values().copied().collect());
        client.ids = nodes.keys().enumerate().map(|(i, id)| (*id, i)).collect();
        client
    }

    /// Attempts per request.
    pub fn attempts(mut self, attempts: u32) -> KvClient {
        self.attempts = attempts.max(1);
        self
    }

    /// The deadline of one attempt.
    pub fn call_timeout(mut self, timeout: Duration) -> KvClient {
        self.call_timeout = timeout;
        self
    }

    /// The client id its writes carry.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    fn current(&self) -> SocketAddr {
        let i = *self
            .leader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.nodes[i % self.nodes.len()]
    }

    fn go_to(&self, next: Next) -> String {
        let mut i = self
            .leader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match next {
            Next::Leader(addr) => {
                match self.nodes.iter().position(|a| *a == addr) {
                    Some(p) => *i = p,
                    None => {
                        tracing::debug!(%addr, "leader not among the known nodes: moving on");
                        *i = (*i + 1) % self.nodes.len();
                    }
                }
                format!("redirected to {addr}")
            }
            Next::LeaderAt(p) => {
                *i = p;
                format!("redirected to {}", self.nodes[p])
            }
            Next::Another(why) => {
                *i = (*i + 1) % self.nodes.len();
                why
            }
        }
    }

    async fn stub(&self, addr: SocketAddr) -> Result<KeyValueClient, String> {
        if let Some(s) = self
            .stubs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&addr)
        {
            return Ok(s.clone());
        }
        let s = KeyValueClient::connect(&format!("udp://{addr}"))
            .await
            .map_err(|e| e.to_string())?;
        self.stubs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(addr, s.clone());
        Ok(s)
    }

    /// Runs `call` against the leader, following redirections, at most
    /// `attempts` times.
    async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, KvClientError>
    where
        F: FnMut(KeyValueClient, Duration) -> Fut,
        Fut: Future<Output = Result<T, CallError<KvError>>>,
    {
        if self.nodes.is_empty() {
            return Err(KvClientError::GaveUp {
                attempts: 0,
                last: "no node addresses".to_owned(),
            });
        }
        let mut last = String::new();
        let mut pause = Duration::from_millis(10);
        // The last node that gave no answer: a follower that still names
        // it as the leader (it has not noticed its death yet) is not
        // followed back to it the first time.
        let mut silent: Option<SocketAddr> = None;
        for attempt in 0..self.attempts {
            let addr = self.current();
            let next = match self.stub(addr).await {
                Err(e) => {
                    silent = Some(addr);
                    Next::Another(format!("cannot connect to {addr}: {e}"))
                }
                Ok(stub) => match call(stub, self.call_timeout).await {
                    Ok(v) => return Ok(v),
                    Err(CallError::Raised(e, _)) => {
                        if silent == Some(addr) {
                            silent = None;
                        }
                        let kind =
                            KvErrorKind::try_from(e.kind).unwrap_or(KvErrorKind::Unspecified);
                        match kind {
                            KvErrorKind::NotLeader => match e.not_leader {
                                Some(nl)
                                    if nl.known
                                        && self
                                            .ids
                                            .get(&nl.leader_id)
                                            .is_some_and(|p| self.nodes[*p] != addr) =>
                                {
                                    // Checked just above.
                                    Next::LeaderAt(
                                        self.ids.get(&nl.leader_id).copied().unwrap_or(0),
                                    )
                                }
                                Some(nl)
                                    if nl.known
                                        && nl
                                            .leader_addr
                                            .parse::<SocketAddr>()
                                            .is_ok_and(|a| a != addr) =>
                                {
                                    // Checked just above.
                                    let a = nl.leader_addr.parse().unwrap_or(addr);
                                    Next::Leader(a)
                                }
                                _ => Next::Another(format!("{addr}: {}", e.detail)),
                            },
                            KvErrorKind::Unavailable => {
                                Next::Another(format!("{addr}: {}", e.detail))
                            }
                            _ => {
                                return Err(KvClientError::Refused {
                                    kind,
                                    detail: e.detail,
                                })
                            }
                        }
                    }
                    Err(CallError::Rpc(e @ rpc_core::Error::MessageTooLarge { .. })) => {
                        return Err(KvClientError::TooLarge(e))
                    }
                    Err(CallError::Rpc(e)) => {
                        silent = Some(addr);
                        Next::Another(format!("{addr}: {e}"))
                    }
                },
            };
            let target = match next {
                Next::Leader(a) => Some(a),
                Next::LeaderAt(p) => Some(self.nodes[p]),
                Next::Another(_) => None,
            };
            let next = match target {
                Some(t) if silent == Some(t) => {
                    // Not followed once (it may be dead and not yet
                    // noticed); named again after that, it is tried: one
                    // lost answer must not keep a live leader out.
                    silent = None;
                    Next::Another(format!(
                        "{addr} names {t} as the leader, which did not answer"
                    ))
                }
                // Not among the addresses this client may use: try the
                // next one, after a pause like any other failure.
                Some(t) if !self.nodes.contains(&t) => Next::Another(format!(
                    "{addr} names {t} as the leader, which this client does not know"
                )),
                _ => next,
            };
            let redirected = matches!(next, Next::Leader(_) | Next::LeaderAt(_));
            last = self.go_to(next);
            tracing::debug!(attempt, %last, "retrying");
            if !redirected {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
        Err(KvClientError::GaveUp {
            attempts: self.attempts,
            last,
        })
    }

    /// Checks `key` and `value` against the store's limits, as the store
    /// would.
    fn check(key: &str, value: Option<&[u8]>) -> Result<(), KvClientError> {
        kv::check_key(key).map_err(|detail| KvClientError::Refused {
            kind: KvErrorKind::BadKey,
            detail,
        })?;
        if let Some(v) = value {
            kv::check_value(v).map_err(|detail| KvClientError::Refused {
                kind: KvErrorKind::ValueTooLarge,
                detail,
            })?;
        }
        Ok(())
    }

    /// Runs a write through `run`: one write at a time, and every attempt
    /// of it under the same, next write id (so that the store applies it
    /// once).
    async fn write<T, F, Fut>(&self, mut call: F) -> Result<T, KvClientError>
    where
        F: FnMut(KeyValueClient, Duration, Option<WriteId>) -> Fut,
        Fut: Future<Output = Result<T, CallError<KvError>>>,
    {
        let _one = self.writing.lock().await;
        let id = self.next_write();
        self.run(|stub, t| call(stub, t, id.clone())).await
    }

    fn next_write(&self) -> Option<WriteId> {
        Some(WriteId {
            client_id: self.client_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }

    /// Sets `key` to `value`; returns the previous value.
    ///
    /// # Errors
    /// [`KvClientError`].
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>, KvClientError> {
        Self::check(key, Some(value))?;
        let r = self
            .write(|stub, t, id| {
                let req = PutRequest {
                    key: key.to_owned(),
                    value: value.to_vec().into(),
                    id,
                };
                async move { stub.put(req).timeout(t).await }
            })
            .await?;
        Ok(r.had_previous.then(|| r.previous.to_vec()))
    }

    /// Reads `key` (linearizable).
    ///
    /// # Errors
    /// [`KvClientError`].
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvClientError> {
        Self::check(key, None)?;
        let r = self
            .run(|stub, t| {
                let req = GetRequest {
                    key: key.to_owned(),
                };
                async move { stub.get(req).timeout(t).await }
            })
            .await?;
        Ok(r.found.then(|| r.value.to_vec()))
    }

    /// Deletes `key`; returns whether it had a value.
    ///
    /// # Errors
    /// [`KvClientError`].
    pub async fn delete(&self, key: &str) -> Result<bool, KvClientError> {
        Self::check(key, None)?;
        let r = self
            .write(|stub, t, id| {
                let req = DeleteRequest {
                    key: key.to_owned(),
                    id,
                };
                async move { stub.delete(req).timeout(t).await }
            })
            .await?;
        Ok(r.existed)
    }

    /// Sets `key` to `value` if its value is `expected` (`None`: if it has
    /// none); returns whether it did.
    ///
    /// # Errors
    /// [`KvClientError`]; `KEY_NOT_FOUND` when `expected` is a value and
    /// the key has none.
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvClientError> {
        Self::check(key, Some(value))?;
        if let Some(e) = expected {
            Self::check(key, Some(e))?;
        }
        let r = self
            .write(|stub, t, id| {
                let req = CasRequest {
                    key: key.to_owned(),
                    expected: expected.map(|e| e.to_vec().into()),
                    value: value.to_vec().into(),
                    id,
                };
                async move { stub.compare_and_set(req).timeout(t).await }
            })
            .await?;
        Ok(r.swapped)
    }
}
