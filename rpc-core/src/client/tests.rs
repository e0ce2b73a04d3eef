//! Tests of the channel core: its configuration, the server check, the exchange over a reliable link.

use super::*;
use crate::service::{MethodInfo, Protocol, ServiceInfo, Style};

#[test]
fn config_is_normalized() {
    let c = ChannelConfig {
        min_rto: Duration::ZERO,
        max_rto: Duration::MAX,
        initial_rto: Duration::MAX,
        max_wait: Duration::MAX,
        ..ChannelConfig::default()
    };
    let n = c.normalized();
    assert_eq!(n.min_rto, Duration::from_millis(1));
    assert_eq!(
        (n.max_rto, n.initial_rto, n.max_wait),
        (MAX_WAIT_LIMIT, MAX_WAIT_LIMIT, MAX_WAIT_LIMIT)
    );
    let c = ChannelConfig {
        min_rto: Duration::from_millis(50),
        max_rto: Duration::from_millis(10),
        ..ChannelConfig::default()
    };
    let n = c.normalized();
    let fifty = Duration::from_millis(50);
    assert_eq!((n.min_rto, n.max_rto, n.initial_rto), (fifty, fifty, fifty));
    assert_eq!(
        ChannelConfig::default().normalized(),
        ChannelConfig::default()
    );
}

#[test]
fn server_address_match() {
    let shared = |server: &str| Shared {
        link: (),
        server: server
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        session_id: 1,
        config: ChannelConfig::default(),
        state: Mutex::new(Session::new(
            RtoEstimator::new(
                Duration::from_millis(1),
                Duration::from_millis(1),
                Duration::from_millis(1),
            ),
            0,
        )),
        counters: Counters::default(),
        closed: AtomicBool::new(false),
        outbox: Mutex::new(Outbox::default()),
    };
    let addr = |s: &str| {
        s.parse::<SocketAddr>()
            .unwrap_or_else(|_| SocketAddr::from(([9, 9, 9, 9], 9)))
    };
    let s = shared("127.0.0.1:7000");
    assert!(s.is_server(addr("127.0.0.1:7000")));
    assert!(s.is_server(addr("[::ffff:127.0.0.1]:7000")), "v4-mapped");
    assert!(!s.is_server(addr("127.0.0.1:7001")));
    assert!(!s.is_server(addr("127.0.0.2:7000")));
    let any = shared("0.0.0.0:7000");
    assert!(any.is_server(addr("10.1.2.3:7000")));
    assert!(!any.is_server(addr("10.1.2.3:7001")));
}

/// A reliable link that records what the exchange sends and delivers
/// nothing: the test plays the connection (its number).
struct Reliable(Arc<Recorded>);

#[derive(Default)]
struct Recorded {
    sent: Mutex<Vec<crate::envelope::Envelope>>,
    connection: std::sync::atomic::AtomicU64,
}

impl Recorded {
    fn sent(&self) -> Vec<(u64, u32)> {
        let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        sent.iter().map(|e| (e.request_id, e.attempt)).collect()
    }
}

impl Link for Reliable {
    fn send(
        &self,
        message: link::Outgoing<'_>,
    ) -> impl std::future::Future<Output = io::Result<usize>> + Send {
        use prost::Message;
        if let Ok(env) = crate::envelope::Envelope::decode(message.bytes) {
            let mut sent = self.0.sent.lock().unwrap_or_else(PoisonError::into_inner);
            sent.push(env);
        }
        std::future::ready(Ok(message.bytes.len()))
    }

    fn send_batch(
        &self,
        batch: &link::OutgoingBatch,
    ) -> impl std::future::Future<Output = crate::transport::SendReport> + Send {
        assert!(batch.is_empty(), "nothing to flush: no answers arrive");
        std::future::ready(crate::transport::SendReport::default())
    }

    fn recv_batch(
        &self,
        _batch: &mut crate::transport::RecvBatch,
    ) -> impl std::future::Future<Output = io::Result<usize>> + Send {
        std::future::pending()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Err(io::ErrorKind::NotConnected.into())
    }

    fn reliable(&self) -> bool {
        true
    }

    fn connection(&self) -> u64 {
        self.0.connection.load(Ordering::Acquire)
    }
}

/// A test service's methods (RR, synchronous, a deadline of 60 s): "Get"
/// (idempotent: no PING first) and "Put" (not idempotent).
pub(super) static METHODS: [MethodInfo; 2] = [
    GET,
    MethodInfo {
        name: "Put",
        id: 2,
        idempotent: false,
        ..GET
    },
];
const GET: MethodInfo = MethodInfo {
    name: "Get",
    id: 1,
    request_type: "t.Key",
    response_type: "t.Value",
    raises_type: "t.NotFound",
    oneway: false,
    idempotent: true, // no PING first
    protocol: Protocol::RR,
    style: Style::Sync,
    timeout_ms: 60_000, // the call's deadline
    retries: Some(10),
};
/// The test service of [`METHODS`].
pub(super) static INFO: ServiceInfo = ServiceInfo {
    package: "t",
    name: "S",
    full_name: "t.S",
    methods: &METHODS,
};

#[tokio::test(start_paused = true)]
async fn over_a_reliable_link_a_request_goes_once_and_is_polled_after_a_reconnect() {
    let recorded = Arc::new(Recorded::default());
    recorded.connection.store(1, Ordering::Release);
    let server = SocketAddr::from(([127, 0, 0, 1], 9));
    let core = Core::new(
        Reliable(Arc::clone(&recorded)),
        server,
        ChannelConfig::default(),
    );
    let invocation = Invocation {
        service: &INFO,
        method: &METHODS[0],
        instance: String::new(),
        payload: bytes::Bytes::new(),
        metadata: Default::default(),
        options: crate::call::CallOptions::for_method(&METHODS[0]),
    };
    let call = tokio::spawn(core.invoke(invocation));
    // Far past the last copy a datagram channel would send (about 7.5 s
    // after the first with the defaults): the paused clock jumps there.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        recorded.sent(),
        vec![(1, 1)],
        "one copy, never retransmitted"
    );
    let stats = core.stats();
    assert_eq!((stats.attempts, stats.retransmissions), (1, 0));
    // The connection that carried it is replaced: its answer may be lost,
    // so the call polls (the poll interval is at most `max_rto`, 1 s).
    recorded.connection.store(2, Ordering::Release);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = recorded.sent();
    assert!(sent.len() >= 2, "polled after the reconnect: {sent:?}");
    assert!(
        sent.iter()
            .enumerate()
            .all(|(i, &(id, attempt))| id == 1 && attempt as usize == i + 1),
        "copies of the same request: {sent:?}"
    );
    assert!(!call.is_finished(), "still waiting for its answer");
    call.abort();
}
