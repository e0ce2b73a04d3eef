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

// The core shared with the multicast client: `Calls` and `Peer`.

#[test]
fn calls_hand_out_ids_and_keep_the_caller_state() {
    let mut c: Calls<&str> = Calls::new();
    assert_eq!((c.next_id(), c.ack_up_to()), (1, 0));
    assert!(!c.issued(0) && !c.issued(1));
    assert_eq!(c.start(false, "a"), 1);
    assert_eq!(c.start_one_way(), 2);
    assert_eq!(c.start(true, "c"), 3);
    assert!(c.issued(2) && c.issued(3) && !c.issued(4));
    assert_eq!(
        (c.get(1), c.get(2), c.get(3)),
        (Some(&"a"), None, Some(&"c"))
    );
    if let Some(state) = c.get_mut(3) {
        *state = "c2";
    }
    let mut all: Vec<&str> = c.calls_mut().map(|s| *s).collect();
    all.sort_unstable();
    assert_eq!(all, vec!["a", "c2"]);
    assert!(c.is_unfinished(1) && !c.is_unfinished(2) && c.is_unfinished(3));
}

#[test]
fn calls_low_water_mark_advances_with_the_lowest_call() {
    let mut c: Calls<()> = Calls::new();
    let a = c.start(false, ());
    let b = c.start(false, ());
    let d = c.start_one_way();
    assert_eq!(c.ack_up_to(), 0);
    assert!(!c.finish(b), "2 is not the lowest");
    assert!(!c.finish(b), "finishing twice does nothing");
    assert!(!c.finish(d), "a one-way call is not pending");
    assert_eq!(c.ack_up_to(), 0);
    assert!(c.finish(a), "1 was the lowest");
    assert_eq!(c.ack_up_to(), d, "1, 2 and the one-way 3 are finished");
    // finished calls stay until they end; ending them moves nothing
    assert!(c.get(a).is_some() && !c.is_unfinished(a));
    assert!(!c.end(a) && !c.end(b));
    assert!(c.get(a).is_none() && c.get(b).is_none(), "forgotten");
    assert!(!c.end(b), "ending twice");
    assert_eq!(c.ack_up_to(), d);
    // ending an unfinished call finishes it
    let e = c.start(false, ());
    assert_eq!(c.ack_up_to(), 3);
    assert!(c.end(e));
    assert_eq!(c.ack_up_to(), e);
}

#[test]
fn calls_acknowledge_rra_answers_while_pending_and_after() {
    let mut c: Calls<()> = Calls::new();
    let rr = c.start(false, ());
    let rra = c.start(true, ());
    let ended_unfinished = c.start(true, ());
    assert!(!c.acknowledges(rr) && c.acknowledges(rra));
    c.finish(rra);
    assert!(c.acknowledges(rra), "finished, not collected");
    c.end(rra);
    c.end(rr);
    assert!(c.acknowledges(rra), "ended: remembered");
    assert!(!c.acknowledges(rr));
    // a call dropped before its answer is remembered too (multicast: the
    // members' later answers are acknowledged)
    c.end(ended_unfinished);
    assert!(c.acknowledges(ended_unfinished));
    assert!(!c.acknowledges(99) && !c.acknowledges(0));
}

#[test]
fn calls_remember_a_bounded_number_of_rra_ids() {
    let mut c: Calls<()> = Calls::new();
    let first = c.start(true, ());
    c.end(first);
    for _ in 1..4096 {
        let id = c.start(true, ());
        c.end(id);
    }
    assert!(c.acknowledges(first), "4096 ids are remembered");
    let id = c.start(true, ());
    c.end(id);
    assert!(!c.acknowledges(first), "the oldest is forgotten first");
    assert!(c.acknowledges(first + 1) && c.acknowledges(id));
}

#[test]
fn peer_learns_incarnation_and_cookie_ignoring_zero() {
    let mut p = Peer::default();
    assert_eq!((p.incarnation(), p.cookie()), (0, 0));
    assert!(!p.saw_incarnation(0));
    assert!(p.saw_incarnation(7), "became known");
    assert!(!p.saw_incarnation(7));
    assert!(!p.saw_incarnation(0), "0 shows nothing");
    assert!(!p.saw_incarnation(8), "a restart: known before");
    assert_eq!(p.incarnation(), 8);
    p.saw_cookie(5);
    p.saw_cookie(0);
    assert_eq!(p.cookie(), 5);
    p.saw_cookie(6);
    assert_eq!(p.cookie(), 6);
}
