//! The lock service (`idl/mutex.idl`): one lock server on UDP, TCP and
//! gRPC; three clients, one per door, take the same lock in turn (FIFO,
//! tokens rising); a fenced resource accepts the holder's token and
//! refuses an older one; a holder that crashes (never renews, never
//! releases) loses the lock when its lease ends and its late write is
//! refused.

use crate::report::{Report, Row};
use anyhow::Context as _;
use rpc_core::client::{TcpChannel, UdpChannel};
use rpc_core::grpc::GrpcChannel;
use rpc_core::{CallError, Client};
use rpc_services::mutex::{
    epoch, serve, serve_resource, LockClient, LockServer, LockServerConfig, ResourceService,
};
use rpc_services::proto::mutex::v1::{
    AcquireRequest, InspectRequest, LocksClient, ResourceClient, WriteRequest,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PATH: &str = "mutex";
/// The lease of the holder that crashes.
const CRASH_LEASE: Duration = Duration::from_millis(300);

fn token(t: u64) -> String {
    format!("{}.{}", t >> 32, t & 0xffff_ffff)
}

/// The lock service section of the tour.
pub(crate) async fn mutex(report: &mut Report) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("rpc-tour-mutex-{}", std::process::id()));
    let epoch = epoch::advance(&dir).context("the lock server's epoch")?;
    let server = serve(LockServer::new(LockServerConfig::new(epoch)), "127.0.0.1:0")
        .await
        .context("starting the lock server")?;
    let tcp = server.serve_tcp("127.0.0.1:0").await?;
    let grpc = server.serve_grpc("127.0.0.1:0").await?;
    let resource = Arc::new(ResourceService::new());
    let res_server = serve_resource(Arc::clone(&resource), "127.0.0.1:0").await?;
    let res = ResourceClient::new(Client::new(
        UdpChannel::connect(res_server.local_addr()).await?,
    ));
    println!();
    println!(
        "mutex: mutex.v1.Locks (epoch {epoch}, in {}) on UDP {}, TCP {tcp}, gRPC {grpc}; a fenced Resource on {}",
        dir.display(),
        server.local_addr(),
        res_server.local_addr()
    );

    // Three clients, one per door, take the lock in turn.
    let clients = [
        (
            "udp",
            LockClient::new(
                Client::new(UdpChannel::connect(server.local_addr()).await?),
                "alice",
            ),
        ),
        (
            "tcp",
            LockClient::new(Client::new(TcpChannel::connect(tcp).await?), "bob"),
        ),
        (
            "grpc",
            LockClient::new(
                Client::new(GrpcChannel::connect(&format!("http://{grpc}")).await?),
                "carol",
            ),
        ),
    ];
    let start = Instant::now();
    let first = clients[0].1.lock("account").await?;
    report.sync_call(
        format!("{PATH} udp"),
        "lock(account) by alice",
        "RRA",
        Ok(format!("granted at once, token {}", token(first.token()))),
        start,
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (door, client) in &clients[1..] {
        let (door, waiter, tx) = (*door, client.clone(), tx.clone());
        let asked = Instant::now();
        tokio::spawn(async move {
            let r = waiter.lock("account").await;
            let _ = tx.send((door, waiter.owner().to_owned(), asked, r));
        });
        // Queue them in this order: the next asks once this one waits.
        queued(clients[0].1.stub(), client.owner()).await;
    }
    let mut last = first.token();
    first.release().await?;
    let mut order = Vec::new();
    let mut fenced = 0;
    for _ in 0..2 {
        let Some((door, owner, asked, r)) = rx.recv().await else {
            break;
        };
        let result = match r {
            Ok(guard) if guard.token() > last => {
                last = guard.token();
                let w = res
                    .write(WriteRequest {
                        token: guard.token(),
                        value: i64::from(guard.token() as u32),
                    })
                    .await;
                fenced = guard.token();
                order.push(owner.clone());
                let _ = guard.release().await;
                match w {
                    Ok(_) => Ok(format!(
                        "granted after the holder before released, token {}; its write accepted",
                        token(last)
                    )),
                    Err(e) => Err(format!("its write was refused: {e}")),
                }
            }
            Ok(guard) => Err(format!("token {} did not rise", token(guard.token()))),
            Err(e) => Err(format!("not granted: {e}")),
        };
        report.sync_call(
            format!("{PATH} {door}"),
            format!("lock(account) by {owner}, queued"),
            "RRA",
            result,
            asked,
        );
    }
    report.check(order == ["bob", "carol"], || {
        format!("mutex: grants not in arrival order: {order:?}")
    });

    // Fencing: the first holder's token is older than the last one seen.
    let start = Instant::now();
    let stale = res
        .write(WriteRequest {
            token: fenced.saturating_sub(1),
            value: -1,
        })
        .await;
    report.sync_call(
        format!("{PATH} resource"),
        "Write with an older token",
        "RRA",
        match stale {
            Err(CallError::Raised(e, _)) => Ok(format!(
                "refused: StaleToken {} < highest {}",
                token(e.token),
                token(e.highest_token)
            )),
            other => Err(format!("expected StaleToken, got {other:?}")),
        },
        start,
    );

    // A holder that crashes: granted with a short lease, then silent.
    let stub = LocksClient::new(Client::new(UdpChannel::connect(server.local_addr()).await?));
    let crashed = stub
        .acquire(AcquireRequest {
            lock: "account".into(),
            owner: "crashed-process".into(),
            wait_ms: 1_000,
            lease_ms: u32::try_from(CRASH_LEASE.as_millis()).unwrap_or(u32::MAX),
            acquire_id: 1,
        })
        .synchronous()
        .await?;
    let start = Instant::now();
    let next = clients[0].1.lock("account").await;
    let waited = start.elapsed();
    let result = match next {
        Ok(guard) if guard.token() > crashed.token => {
            let granted = guard.token();
            let late = res
                .write(WriteRequest {
                    token: guard.token(),
                    value: 1,
                })
                .await
                .is_ok()
                && res
                    .write(WriteRequest {
                        token: crashed.token,
                        value: 2,
                    })
                    .await
                    .is_err();
            let _ = guard.release().await;
            if late {
                Ok(format!(
                    "the crashed holder's lease ({} ms) ended: granted, token {}; the crashed holder's late write (token {}) refused",
                    CRASH_LEASE.as_millis(),
                    token(granted),
                    token(crashed.token)
                ))
            } else {
                Err("the crashed holder's late write was not refused".to_owned())
            }
        }
        Ok(guard) => Err(format!(
            "granted after {waited:?} with token {}: before the crashed holder's lease ended?",
            token(guard.token())
        )),
        Err(e) => Err(format!("not granted: {e}")),
    };
    report.row(Row::made(
        format!("{PATH} udp"),
        "lock(account) by alice after a holder crashed",
        "sync",
        "RRA",
        result,
        waited,
        None,
    ));
    report.check(resource.value() == 1, || {
        format!("mutex: the resource holds {}, not 1", resource.value())
    });
    drop(clients);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Waits (polling every 2 ms, at most 10 s) until `owner` is the last
/// waiter of `account`.
async fn queued(stub: &LocksClient, owner: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let state = stub
            .inspect(InspectRequest {
                lock: "account".into(),
            })
            .await;
        if state.is_ok_and(|s| s.waiters.last().map(String::as_str) == Some(owner)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
