//! Every executed call runs inside a `rpc_call` span naming the service,
//! method, session, request id and attempt.
#![allow(clippy::unwrap_used)]

mod server_support;

use rpc_core::server::Server;
use server_support::*;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime: the subscriber set on this thread sees the
// server's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn handlers_run_in_a_span_with_the_call_fields() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tokio::time::timeout(Duration::from_secs(10), async {
        let (server, _state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        let mut r = request(50, 3, ECHO);
        r.attempt = 2;
        peer.call(&r).await;
        // Malformed input is logged at debug.
        peer.send_raw(&[0xFF, 0xFF, 0xFF]).await;
        wait_stats(&server, |s| s.malformed_dropped == 1).await;
    })
    .await
    .unwrap();
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("echo handler runs"))
        .unwrap_or_else(|| panic!("no handler event in:\n{text}"));
    for field in [
        "rpc_call{",
        "service=test.v1.Counter",
        "method=Echo",
        "session=50",
        "request_id=3",
        "attempt=2",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    assert!(text.contains("dropped undecodable message"), "{text}");
}
