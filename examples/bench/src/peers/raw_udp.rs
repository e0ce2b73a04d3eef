//! Baseline: a raw tokio UDP echo, ping-pong with no ids and no
//! retransmission; the latency reference of the ratios.

use crate::target::{spawn_server, Role, ServerTask, Target};
use crate::PAYLOAD;
use anyhow::{bail, ensure};
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::net::UdpSocket;
use tokio::runtime::Handle;

/// Ping-pong over UDP: one server socket echoing every datagram; on the
/// client, one socket per call in flight (a pool), each doing send then
/// receive. No ids, no retransmission: the floor any UDP RPC pays.
#[derive(Debug)]
pub(crate) struct RawUdp {
    server: SocketAddr,
    pool: Mutex<Vec<UdpSocket>>,
    payload: [u8; PAYLOAD],
    _task: ServerTask,
}

impl RawUdp {
    pub(crate) async fn start(server_rt: &Handle, max_in_flight: usize) -> anyhow::Result<RawUdp> {
        let (server, task) = spawn_server(
            server_rt,
            "raw UDP server",
            |socket: UdpSocket| async move {
                let mut buf = [0u8; 2048];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    if socket.send_to(&buf[..n], from).await.is_err() {
                        break;
                    }
                }
            },
        )
        .await?;
        let mut pool = Vec::with_capacity(max_in_flight);
        for _ in 0..max_in_flight {
            pool.push(UdpSocket::bind("127.0.0.1:0").await?);
        }
        let mut payload = [0u8; PAYLOAD];
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        Ok(RawUdp {
            server,
            pool: Mutex::new(pool),
            payload,
            _task: task,
        })
    }
}

impl Target for RawUdp {
    fn name(&self) -> String {
        "raw tokio UDP echo".to_owned()
    }

    fn role(&self) -> Role {
        Role::RawUdp
    }

    async fn call(&self) -> anyhow::Result<()> {
        let popped = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let Some(socket) = popped else {
            bail!("more calls in flight than sockets")
        };
        let mut buf = [0u8; 2 * PAYLOAD];
        let result = async {
            socket.send_to(&self.payload, self.server).await?;
            let (n, _) = socket.recv_from(&mut buf).await?;
            anyhow::Ok(n)
        }
        .await;
        if let Ok(mut pool) = self.pool.lock() {
            pool.push(socket);
        }
        let n = result?;
        ensure!(buf[..n] == self.payload, "raw UDP: wrong echo");
        Ok(())
    }
}
