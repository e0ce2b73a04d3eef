//! The anchor of the lock and consensus sections: etcd 3.x, as users would
//! otherwise deploy it, started by the bench as child processes on loopback
//! (one member, or three) and called over gRPC.
//!
//! - [`ensure_installed`]: `etcd` on `PATH`, or installed from the Debian
//!   package `etcd-server` (`apt-get install -y etcd-server`, after
//!   `apt-get update` if the first try fails). When that fails, the
//!   sections print `etcd unavailable: <reason>` in etcd's columns and go
//!   on with ours.
//! - [`EtcdCluster`]: the members as [`rpc_testkit`] nodes, each in a data
//!   directory of the run's temporary directory, with etcd's default
//!   durability (the WAL is fsynced before a proposal is acknowledged).
//! - [`Etcd`]: a client of the leader's endpoint (one HTTP/2 connection,
//!   as the `etcd-client` crate keeps one): `Put`, `Range` (linearizable or
//!   serializable), `LeaseGrant`, `Lock`/`Unlock` (`v3lockpb`) and
//!   `Status`.
//!
//! # Why not the `etcd-client` crate
//!
//! Every release of `etcd-client` compiles etcd's `.proto` files in its
//! build script through `tonic-prost-build`, which needs a `protoc` binary
//! at build time; the workspace builds without one (the gRPC echo of the
//! bench is generated with `tonic_build::manual` for the same reason), so
//! adding it would break every build on a machine without `protoc`. The
//! few calls the bench makes are plain unary gRPC calls, so they are made
//! here directly with tonic's generic client and prost messages written to
//! etcd's wire format (field numbers from etcd's `rpc.proto`, `kv.proto`
//! and `v3lock.proto`). On the wire this is what `etcd-client` sends: the
//! same HTTP/2 connection, paths and messages.

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use rpc_testkit::{Cluster, NodeBuilder};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// etcd's messages, as prost would derive them from etcd's `.proto` files
/// (only the fields the bench uses or receives).
#[allow(missing_docs)]
pub(crate) mod pb {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub(crate) cluster_id: u64,
        #[prost(uint64, tag = "2")]
        pub(crate) member_id: u64,
        #[prost(int64, tag = "3")]
        pub(crate) revision: i64,
        #[prost(uint64, tag = "4")]
        pub(crate) raft_term: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct KeyValue {
        #[prost(bytes = "bytes", tag = "1")]
        pub(crate) key: Bytes,
        #[prost(int64, tag = "2")]
        pub(crate) create_revision: i64,
        #[prost(int64, tag = "3")]
        pub(crate) mod_revision: i64,
        #[prost(int64, tag = "4")]
        pub(crate) version: i64,
        #[prost(bytes = "bytes", tag = "5")]
        pub(crate) value: Bytes,
        #[prost(int64, tag = "6")]
        pub(crate) lease: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PutRequest {
        #[prost(bytes = "bytes", tag = "1")]
        pub(crate) key: Bytes,
        #[prost(bytes = "bytes", tag = "2")]
        pub(crate) value: Bytes,
        #[prost(int64, tag = "3")]
        pub(crate) lease: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub(crate) header: Option<ResponseHeader>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct RangeRequest {
        #[prost(bytes = "bytes", tag = "1")]
        pub(crate) key: Bytes,
        /// With `key`, the half-open range `[key, range_end)`.
        #[prost(bytes = "bytes", tag = "2")]
        pub(crate) range_end: Bytes,
        /// Served by the member alone, without a round of consensus.
        #[prost(bool, tag = "7")]
        pub(crate) serializable: bool,
        #[prost(bool, tag = "9")]
        pub(crate) count_only: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct RangeResponse {
        #[prost(message, optional, tag = "1")]
        pub(crate) header: Option<ResponseHeader>,
        #[prost(message, repeated, tag = "2")]
        pub(crate) kvs: Vec<KeyValue>,
        #[prost(bool, tag = "3")]
        pub(crate) more: bool,
        #[prost(int64, tag = "4")]
        pub(crate) count: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct LeaseGrantRequest {
        #[prost(int64, tag = "1")]
        pub(crate) ttl: i64,
        #[prost(int64, tag = "2")]
        pub(crate) id: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct LeaseGrantResponse {
        #[prost(message, optional, tag = "1")]
        pub(crate) header: Option<ResponseHeader>,
        #[prost(int64, tag = "2")]
        pub(crate) id: i64,
        #[prost(int64, tag = "3")]
        pub(crate) ttl: i64,
        #[prost(string, tag = "4")]
        pub(crate) error: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct StatusRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub(crate) header: Option<ResponseHeader>,
        #[prost(string, tag = "2")]
        pub(crate) version: String,
        #[prost(int64, tag = "3")]
        pub(crate) db_size: i64,
        #[prost(uint64, tag = "4")]
        pub(crate) leader: u64,
        #[prost(uint64, tag = "5")]
        pub(crate) raft_index: u64,
        #[prost(uint64, tag = "6")]
        pub(crate) raft_term: u64,
    }

    /// `v3lockpb.LockRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct LockRequest {
        #[prost(bytes = "bytes", tag = "1")]
        pub(crate) name: Bytes,
        #[prost(int64, tag = "2")]
        pub(crate) lease: i64,
    }

    /// `v3lockpb.LockResponse`: the key that holds the lock.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct LockResponse {
        #[prost(message, optional, tag = "1")]
        pub(crate) header: Option<ResponseHeader>,
        #[prost(bytes = "bytes", tag = "2")]
        pub(crate) key: Bytes,
    }

    /// `v3lockpb.UnlockRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct UnlockRequest {
        #[prost(bytes = "bytes", tag = "1")]
        pub(crate) key: Bytes,
    }

    /// `v3lockpb.UnlockResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct UnlockResponse {
        #[prost(message, optional, tag = "1")]
        pub(crate) header: Option<ResponseHeader>,
    }
}

/// Makes sure an `etcd` binary is on `PATH`, installing the Debian package
/// `etcd-server` when it is not; returns its version line.
///
/// # Errors
/// Why etcd cannot be had (the installer's last words), for the report's
/// "etcd unavailable" line.
pub(crate) fn ensure_installed() -> anyhow::Result<String> {
    if let Ok(version) = etcd_version() {
        return Ok(version);
    }
    println!("  etcd is not on PATH: installing the Debian package etcd-server");
    let install = || apt_get(&["install", "-y", "etcd-server"]);
    if let Err(first) = install() {
        tracing::info!(error = %first, "installing etcd-server failed; updating the package lists first");
        apt_get(&["update"]).context("apt-get update")?;
        install().context("apt-get install -y etcd-server")?;
    }
    etcd_version().context("etcd-server installed, but etcd does not run")
}

/// `etcd --version`'s first line.
fn etcd_version() -> anyhow::Result<String> {
    let out = Command::new("etcd")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .context("running etcd --version")?;
    if !out.status.success() {
        bail!("etcd --version exited with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("etcd").trim().to_owned())
}

/// Runs `apt-get ARGS` non-interactively; its output goes to the bench's
/// standard error only when it fails.
fn apt_get(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .context("running apt-get")?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(anyhow!(
        "apt-get {} exited with {}: {last}",
        args.join(" "),
        out.status
    ))
}

/// `n` distinct free TCP ports on loopback (bound together, then released:
/// another process could take one in between, which a start then reports).
pub(crate) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("binding a free port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// One etcd cluster on loopback: its members as child processes.
#[derive(Debug)]
pub(crate) struct EtcdCluster {
    /// Client endpoints, per member.
    pub(crate) clients: Vec<SocketAddr>,
    /// The members (killed when dropped; their directory is removed by
    /// [`EtcdCluster::passed`] only).
    nodes: Cluster,
}

impl EtcdCluster {
    /// Starts `members` etcd members on loopback, each with its data in
    /// the cluster's temporary directory, and waits until they have a
    /// leader.
    ///
    /// # Errors
    /// A member that does not start; no leader within 30 s.
    pub(crate) async fn start(members: usize) -> anyhow::Result<EtcdCluster> {
        let ports = free_ports(2 * members)?;
        let (client_ports, peer_ports) = ports.split_at(members);
        let initial = (0..members)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", peer_ports[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Cluster::new().context("a directory for etcd")?;
        let mut clients = Vec::new();
        for i in 0..members {
            let client = SocketAddr::from(([127, 0, 0, 1], client_ports[i]));
            let peer = format!("http://127.0.0.1:{}", peer_ports[i]);
            // etcd says where it serves only once it has joined a quorum,
            // so the first line it logs stands for "started" and the
            // client address is known in advance; readiness is waited for
            // below.
            let node = NodeBuilder::new(format!("etcd-m{i}"), "etcd")
                .args([
                    "--name".to_owned(),
                    format!("m{i}"),
                    "--data-dir".to_owned(),
                    "{data}".to_owned(),
                    "--listen-client-urls".to_owned(),
                    format!("http://{client}"),
                    "--advertise-client-urls".to_owned(),
                    format!("http://{client}"),
                    "--listen-peer-urls".to_owned(),
                    peer.clone(),
                    "--initial-advertise-peer-urls".to_owned(),
                    peer,
                    "--initial-cluster".to_owned(),
                    initial.clone(),
                    "--initial-cluster-state".to_owned(),
                    "new".to_owned(),
                    "--initial-cluster-token".to_owned(),
                    "rpc-bench".to_owned(),
                    "--logger".to_owned(),
                    "zap".to_owned(),
                    "--log-outputs".to_owned(),
                    "stdout".to_owned(),
                ])
                .address_from(move |_line| Some(client));
            nodes
                .start(node)
                .with_context(|| format!("starting etcd member m{i}"))?;
            clients.push(client);
        }
        let cluster = EtcdCluster { clients, nodes };
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// The run went through: kills the members and removes their
    /// directory (a failed run keeps it, with the members' logs).
    pub(crate) fn passed(self) {
        self.nodes.passed();
    }

    /// Waits until every member answers `Status` naming the same leader.
    async fn wait_for_leader(&self, bound: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + bound;
        let mut last = anyhow!("no answer yet");
        while Instant::now() < end {
            match self.leader_index().await {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.context(format!("etcd had no leader within {bound:?}")))
    }

    /// Which member leads, asked of every member (all must agree).
    async fn leader_index(&self) -> anyhow::Result<usize> {
        let mut members = Vec::new();
        let mut leaders = Vec::new();
        for &addr in &self.clients {
            let etcd = Etcd::connect(addr).await?;
            let status = etcd.status().await?;
            let me = status.header.map(|h| h.member_id).unwrap_or_default();
            members.push(me);
            leaders.push(status.leader);
        }
        let leader = leaders.first().copied().unwrap_or_default();
        if leader == 0 || leaders.iter().any(|&l| l != leader) {
            bail!("members disagree on the leader: {leaders:?}");
        }
        members
            .iter()
            .position(|&m| m == leader)
            .ok_or_else(|| anyhow!("the leader {leader} is not a member"))
    }

    /// A client of the leader (the member every write ends up at; a
    /// follower would forward it there, one hop more).
    ///
    /// # Errors
    /// When the members do not agree on a leader or it cannot be reached.
    pub(crate) async fn leader_client(&self) -> anyhow::Result<Etcd> {
        let i = self.leader_index().await?;
        Etcd::connect(self.clients[i]).await
    }
}

/// A client of one etcd member: one HTTP/2 connection.
#[derive(Debug, Clone)]
pub(crate) struct Etcd {
    grpc: tonic::client::Grpc<Channel>,
}

impl Etcd {
    /// Connects to the member whose client endpoint is `addr`.
    ///
    /// # Errors
    /// When it cannot be reached.
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Etcd> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("connecting to etcd at {addr}"))?;
        Ok(Etcd {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    /// One unary call of `path`.
    async fn unary<Req, Resp>(&self, path: &'static str, req: Req) -> anyhow::Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .with_context(|| format!("etcd {path}: connection"))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let reply = grpc
            .unary(
                tonic::Request::new(req),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .with_context(|| format!("etcd {path}"))?;
        Ok(reply.into_inner())
    }

    /// The member's status (its id in the header, the leader it knows).
    pub(crate) async fn status(&self) -> anyhow::Result<pb::StatusResponse> {
        self.unary("/etcdserverpb.Maintenance/Status", pb::StatusRequest {})
            .await
    }

    /// Sets `key` (one round of consensus, fsynced).
    pub(crate) async fn put(&self, key: Bytes, value: Bytes) -> anyhow::Result<()> {
        let _: pb::PutResponse = self
            .unary(
                "/etcdserverpb.KV/Put",
                pb::PutRequest {
                    key,
                    value,
                    lease: 0,
                },
            )
            .await?;
        Ok(())
    }

    /// Reads `key`: linearizable (etcd's default: the leader confirms it
    /// still leads, a ReadIndex round) or serializable (the member's own
    /// state, one gRPC round trip).
    pub(crate) async fn get(
        &self,
        key: Bytes,
        serializable: bool,
    ) -> anyhow::Result<Option<Bytes>> {
        let r: pb::RangeResponse = self
            .unary(
                "/etcdserverpb.KV/Range",
                pb::RangeRequest {
                    key,
                    serializable,
                    ..Default::default()
                },
            )
            .await?;
        Ok(r.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// How many keys start with `prefix` (serializable).
    pub(crate) async fn count_prefix(&self, prefix: &[u8]) -> anyhow::Result<i64> {
        let r: pb::RangeResponse = self
            .unary(
                "/etcdserverpb.KV/Range",
                pb::RangeRequest {
                    key: Bytes::copy_from_slice(prefix),
                    range_end: Bytes::from(prefix_end(prefix)),
                    serializable: true,
                    count_only: true,
                },
            )
            .await?;
        Ok(r.count)
    }

    /// A lease of `ttl` seconds (what `etcd-client`'s lock session holds).
    pub(crate) async fn lease_grant(&self, ttl: i64) -> anyhow::Result<i64> {
        let r: pb::LeaseGrantResponse = self
            .unary(
                "/etcdserverpb.Lease/LeaseGrant",
                pb::LeaseGrantRequest { ttl, id: 0 },
            )
            .await?;
        if !r.error.is_empty() {
            bail!("etcd LeaseGrant: {}", r.error);
        }
        Ok(r.id)
    }

    /// Takes the lock `name` under `lease`, waiting for it; returns the key
    /// that holds it (what `unlock` takes).
    pub(crate) async fn lock(&self, name: &str, lease: i64) -> anyhow::Result<Bytes> {
        let r: pb::LockResponse = self
            .unary(
                "/v3lockpb.Lock/Lock",
                pb::LockRequest {
                    name: Bytes::copy_from_slice(name.as_bytes()),
                    lease,
                },
            )
            .await?;
        Ok(r.key)
    }

    /// Releases the lock held by `key`.
    pub(crate) async fn unlock(&self, key: Bytes) -> anyhow::Result<()> {
        let _: pb::UnlockResponse = self
            .unary("/v3lockpb.Lock/Unlock", pb::UnlockRequest { key })
            .await?;
        Ok(())
    }
}

/// The end of the range of keys that start with `prefix` (etcd's
/// convention: the prefix with its last byte below 0xff incremented).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from `prefix` on.
    vec![0]
}
