//! `register-server`: a key-value register (`idl/register.idl`) over UDP,
//! the node of the cluster kit's linearizability tests.
//!
//! ```text
//! register-server --listen 127.0.0.1:PORT [--stale-reads]
//! ```
//!
//! Prints `listening on <addr>` on stdout. Writes and compare-and-sets
//! apply to the primary copy of the data. With `--stale-reads` (a
//! deliberately broken register) reads are served from a replica that
//! replication keeps exactly one change behind per key: after a write
//! completes, a read of that key returns the value before it. A client
//! that writes a key and then reads it back with nothing in between sees
//! stale data every time, so the linearizability checker must catch it.
#![forbid(unsafe_code)]

use rpc_core::server::Server;
use rpc_core::{CallContext, Status};
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

rpc_core::idl!("idl/register.idl");

use register::v1::{CasArgs, Done, Key, Register, RegisterServer, Swapped, Value, WriteArgs};

/// A key-value register over UDP; prints its address.
#[derive(Debug, clap::Parser)]
#[command(name = "register-server", args_override_self = true)]
struct Args {
    /// The UDP address to serve on, e.g. 127.0.0.1:0 for any free port.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Serve reads from a replica one change behind (a broken register).
    #[arg(long)]
    stale_reads: bool,
}

#[derive(Debug, Default)]
struct Data {
    primary: HashMap<String, i64>,
    /// Per key, the value before the last change (replication lags one
    /// change behind).
    replica: HashMap<String, Option<i64>>,
}

#[derive(Debug)]
struct Store {
    data: Mutex<Data>,
    stale_reads: bool,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        // Every update is whole under the lock.
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Data {
    fn set(&mut self, key: String, value: i64) {
        let before = self.primary.insert(key.clone(), value);
        self.replica.insert(key, before);
    }
}

impl Register for Store {
    async fn read(&self, _ctx: CallContext, request: Key) -> Result<Value, Status> {
        let data = self.lock();
        let value = if self.stale_reads {
            data.replica.get(&request.key).copied().flatten()
        } else {
            data.primary.get(&request.key).copied()
        };
        Ok(Value {
            present: value.is_some(),
            value: value.unwrap_or_default(),
        })
    }

    async fn write(&self, _ctx: CallContext, request: WriteArgs) -> Result<Done, Status> {
        self.lock().set(request.key, request.value);
        Ok(Done {})
    }

    async fn cas(&self, _ctx: CallContext, request: CasArgs) -> Result<Swapped, Status> {
        let mut data = self.lock();
        let swapped = data.primary.get(&request.key) == Some(&request.expected);
        if swapped {
            data.set(request.key, request.new);
        }
        Ok(Swapped { swapped })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let store = Store {
        data: Mutex::new(Data::default()),
        stale_reads: args.stale_reads,
    };
    let server = Server::builder()
        .add_service(RegisterServer::new(store))
        .serve_udp(args.listen)
        .await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", server.local_addr())?;
        out.flush()?;
    }
    std::future::pending::<()>().await;
    Ok(())
}
