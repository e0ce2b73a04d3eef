use super::*;
use crate::envelope::{self, VERSION};
use crate::status::Code;

fn session() -> Session {
    Session::new(
        RtoEstimator::new(
            Duration::from_millis(100),
            Duration::from_millis(5),
            Duration::from_secs(1),
        ),
        0,
    )
}

fn msg(kind: MessageType, id: u64) -> Envelope {
    Envelope {
        version: VERSION,
        r#type: kind as i32,
        request_id: id,
        incarnation: 7,
        ..Default::default()
    }
}

#[test]
fn ids_start_at_one_and_increase() {
    let mut s = session();
    assert_eq!(s.start_call(false), 1);
    assert_eq!(s.start_one_way(), 2);
    assert_eq!(s.start_call(true), 3);
}

#[test]
fn ack_up_to_is_a_low_water_mark() {
    let mut s = session();
    assert_eq!(s.ack_up_to(), 0);
    let a = s.start_call(false);
    let b = s.start_call(false);
    let c = s.start_call(false);
    assert_eq!(s.ack_up_to(), 0);
    s.end_call(c);
    assert_eq!(s.ack_up_to(), 0, "3 done but 1 and 2 are not");
    s.end_call(a);
    assert_eq!(s.ack_up_to(), 1);
    let d = s.start_one_way();
    assert_eq!(d, 4);
    assert_eq!(s.ack_up_to(), 1, "2 is still pending");
    s.end_call(b);
    assert_eq!(
        s.ack_up_to(),
        4,
        "everything up to the one-way call is finished"
    );
}

#[test]
fn reply_completes_counts_finished_and_acks_rra() {
    let mut s = session();
    let a = s.start_call(true);
    let b = s.start_call(true);
    let d = s.deliver(
        msg(MessageType::Reply, b),
        MessageType::Reply,
        Instant::now(),
    );
    assert_eq!(d.kind, Routed::Completed);
    assert_eq!((d.ack, s.ack_up_to()), (Some(b), 0), "1 is still pending");
    let d = s.deliver(
        msg(MessageType::Reply, a),
        MessageType::Reply,
        Instant::now(),
    );
    assert_eq!((d.ack, s.ack_up_to()), (Some(a), 2));
    assert_eq!(s.incarnation(), 7);
    // a duplicate while the caller has not collected the result yet
    let d = s.deliver(
        msg(MessageType::Reply, a),
        MessageType::Reply,
        Instant::now(),
    );
    assert_eq!((d.kind, d.ack), (Routed::Late, Some(a)));
    // and after the caller collected it
    s.end_call(a);
    s.end_call(b);
    let d = s.deliver(
        msg(MessageType::Reply, a),
        MessageType::Reply,
        Instant::now(),
    );
    assert_eq!((d.kind, d.ack), (Routed::Late, Some(a)));
}

#[test]
fn late_rr_reply_is_not_acked_and_unknown_ids_are_unknown() {
    let mut s = session();
    let a = s.start_call(false);
    s.deliver(
        msg(MessageType::Reply, a),
        MessageType::Reply,
        Instant::now(),
    );
    s.end_call(a);
    let d = s.deliver(
        msg(MessageType::Reply, a),
        MessageType::Reply,
        Instant::now(),
    );
    assert_eq!((d.kind, d.ack), (Routed::Late, None));
    let d = s.deliver(
        msg(MessageType::Reply, 99),
        MessageType::Reply,
        Instant::now(),
    );
    assert_eq!(d.kind, Routed::Unknown);
    let d = s.deliver(
        msg(MessageType::Reply, 0),
        MessageType::Reply,
        Instant::now(),
    );
    assert_eq!(d.kind, Routed::Unknown);
}

#[test]
fn server_restarted_maps_to_outcome_unknown() {
    let mut s = session();
    let a = s.start_call(false);
    let mut e = msg(MessageType::Error, a);
    e.status = Some(Box::new(envelope::WireStatus {
        code: Code::Aborted.as_i32(),
        message: "outcome unknown: server restarted".into(),
        details_type: SERVER_RESTARTED.into(),
        details: Default::default(),
    }));
    s.deliver(e, MessageType::Error, Instant::now());
    assert!(matches!(
        s.entry(a).and_then(|e| e.result.take()),
        Some(Final::OutcomeUnknown)
    ));
}

#[test]
fn karn_samples_only_single_copies() {
    let mut s = session();
    let a = s.start_call(false);
    let sent = Instant::now();
    if let Some(e) = s.entry(a) {
        e.sample_from = Some(sent);
    }
    s.deliver(
        msg(MessageType::Reply, a),
        MessageType::Reply,
        sent + Duration::from_millis(20),
    );
    assert_eq!(s.rtt().0, Some(Duration::from_millis(20)));
    let b = s.start_call(false);
    // no sample_from: a second copy was sent
    s.deliver(
        msg(MessageType::Reply, b),
        MessageType::Reply,
        sent + Duration::from_millis(900),
    );
    assert_eq!(s.rtt().0, Some(Duration::from_millis(20)));
}

#[test]
fn window_bounds_ids_past_the_low_water_mark() {
    let mut s = Session::new(
        RtoEstimator::new(
            Duration::from_millis(100),
            Duration::from_millis(5),
            Duration::from_secs(1),
        ),
        4,
    );
    // ids 1..=4: N - ack_up_to = N - 0 <= 4
    let ids: Vec<Option<u64>> = (0..4).map(|_| s.try_start_call(false, false)).collect();
    assert_eq!(ids, vec![Some(1), Some(2), Some(3), Some(4)]);
    assert!(!s.window_open(false), "5 - 0 > 4");
    assert_eq!(s.try_start_call(false, false), None);
    assert_eq!(
        s.try_start_one_way(false),
        None,
        "one-way ids are windowed too"
    );
    // finishing a call above the low-water mark opens nothing
    s.end_call(3);
    assert_eq!(s.ack_up_to(), 0);
    assert_eq!(s.try_start_call(true, false), None);
    // the lowest call finishing moves ack_up_to to 1: 5 - 1 <= 4
    s.end_call(1);
    assert_eq!(s.ack_up_to(), 1);
    assert_eq!(s.try_start_call(true, false), Some(5));
    assert_eq!(s.try_start_call(true, false), None, "6 - 1 > 4");
    // a REPLY for 2 finishes it (before the caller collects it): ack 3
    let d = s.deliver(
        msg(MessageType::Reply, 2),
        MessageType::Reply,
        Instant::now(),
    );
    assert_eq!(d.kind, Routed::Completed);
    assert_eq!(s.ack_up_to(), 3);
    assert_eq!(s.try_start_one_way(false), Some(6));
    assert_eq!(s.try_start_call(false, false), Some(7), "7 - 3 <= 4");
    assert_eq!(s.try_start_call(false, false), None);
}

#[test]
fn waiters_go_first_and_zero_is_unlimited() {
    let mut s = Session::new(
        RtoEstimator::new(
            Duration::from_millis(100),
            Duration::from_millis(5),
            Duration::from_secs(1),
        ),
        2,
    );
    assert_eq!(s.try_start_call(false, false), Some(1));
    assert_eq!(s.try_start_call(false, false), Some(2));
    let _notify = s.wait_for_window();
    s.end_call(1);
    assert!(s.window_open(true), "3 - 1 <= 2");
    assert_eq!(
        s.try_start_call(false, false),
        None,
        "a new call does not overtake a waiter"
    );
    assert_eq!(
        s.try_start_call(false, true),
        Some(3),
        "the waiter takes the id"
    );
    s.stop_waiting_for_window();
    assert!(!s.window_open(false), "4 - 1 > 2");
    s.end_call(2);
    s.end_call(3);
    assert_eq!(s.try_start_call(false, false), Some(4), "no waiter left");

    let mut unlimited = session();
    for expected in 1..=5000 {
        assert_eq!(unlimited.try_start_call(false, false), Some(expected));
    }
    assert_eq!(unlimited.ack_up_to(), 0);
}
