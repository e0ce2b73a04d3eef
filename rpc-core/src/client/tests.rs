//! Tests of the UDP channel.

use super::*;

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
