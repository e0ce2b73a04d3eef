//! Unit tests of the checker on hand-written histories.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;

type H = History<&'static str, u32>;

/// Times in milliseconds.
fn ms(t: u64) -> Duration {
    Duration::from_millis(t)
}

fn done(h: &mut H, p: u64, op: Op<&'static str, u32>, at: (u64, u64), r: Response<u32>) -> usize {
    h.push(Entry {
        process: p,
        op,
        invoke: ms(at.0),
        complete: Some(ms(at.1)),
        outcome: Outcome::Ok(r),
    })
}

fn unsure(
    h: &mut H,
    p: u64,
    op: Op<&'static str, u32>,
    at: (u64, u64),
    outcome: Outcome<u32>,
) -> usize {
    h.push(Entry {
        process: p,
        op,
        invoke: ms(at.0),
        complete: Some(ms(at.1)),
        outcome,
    })
}

fn read(v: Option<u32>) -> Response<u32> {
    Response::Read(v)
}

fn verdict(h: &H) -> Verdict<&'static str, u32> {
    check(h).unwrap().verdict
}

fn violation(h: &H) -> Violation<&'static str, u32> {
    match verdict(h) {
        Verdict::NotLinearizable(v) => *v,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn sequential_and_concurrent_histories_that_linearize() {
    let mut h = H::new();
    assert!(check(&h).unwrap().is_linearizable());
    done(&mut h, 1, Op::Read("x"), (0, 1), read(None));
    done(&mut h, 1, Op::Write("x", 1), (2, 3), Response::Written);
    done(&mut h, 2, Op::Read("x"), (4, 5), read(Some(1)));
    assert!(check(&h).unwrap().is_linearizable());

    // A read concurrent with a write sees either value; once one
    // client saw the new value, no later read sees the old one.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 10), Response::Written);
    done(&mut h, 2, Op::Read("x"), (1, 2), read(None));
    done(&mut h, 3, Op::Read("x"), (3, 4), read(Some(1)));
    done(&mut h, 2, Op::Read("x"), (5, 6), read(Some(1)));
    assert!(check(&h).unwrap().is_linearizable());

    // Concurrent writes take effect in either order.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 10), Response::Written);
    done(&mut h, 2, Op::Write("x", 2), (0, 10), Response::Written);
    done(&mut h, 3, Op::Read("x"), (11, 12), read(Some(1)));
    assert!(check(&h).unwrap().is_linearizable());

    // Compare-and-set: one of two concurrent ones from 1 wins.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    done(&mut h, 1, Op::Cas("x", 1, 2), (2, 5), Response::Cas(true));
    done(&mut h, 2, Op::Cas("x", 1, 3), (3, 6), Response::Cas(false));
    done(&mut h, 3, Op::Read("x"), (7, 8), read(Some(2)));
    assert!(check(&h).unwrap().is_linearizable());

    // Equal times cannot order: a completion and an invocation at the
    // same instant are concurrent.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 5), Response::Written);
    done(&mut h, 2, Op::Read("x"), (5, 6), read(None));
    assert!(check(&h).unwrap().is_linearizable());
}

#[test]
fn a_stale_read_is_not_linearizable_and_the_report_says_why() {
    let mut h = H::new();
    let w1 = done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    let w2 = done(&mut h, 2, Op::Write("x", 2), (2, 3), Response::Written);
    let r = done(&mut h, 3, Op::Read("x"), (4, 5), read(Some(1)));
    let v = violation(&h);
    assert_eq!(v.key, "x");
    assert_eq!(v.key_ops, 3);
    assert_eq!(v.linearized, [w1, w2]);
    assert_eq!(v.value, Some(2));
    assert_eq!(v.written_by.as_ref().map(|(i, _)| *i), Some(w2));
    assert_eq!(v.next.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [r]);
    let text = check(&h).unwrap().to_string();
    assert!(text.contains("not linearizable: key \"x\""), "{text}");
    assert!(
        text.contains("leaves 2, written by #1: p2 write(\"x\", 2) -> ok"),
        "{text}"
    );
    assert!(text.contains("#2: p3 read(\"x\") -> 1"), "{text}");
}

#[test]
fn a_lost_write_is_not_linearizable() {
    let mut h = H::new();
    let w = done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    done(&mut h, 2, Op::Read("x"), (2, 3), read(Some(1)));
    let lost = done(&mut h, 2, Op::Read("x"), (4, 5), read(None));
    let v = violation(&h);
    assert_eq!(v.value, Some(1));
    assert_eq!(v.written_by.map(|(i, _)| i), Some(w));
    assert_eq!(v.next[0].0, lost);

    // A write overwritten, then seen again.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    done(&mut h, 2, Op::Write("x", 2), (0, 2), Response::Written);
    done(&mut h, 3, Op::Read("x"), (3, 4), read(Some(2)));
    done(&mut h, 3, Op::Read("x"), (5, 6), read(Some(1)));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
}

#[test]
fn cas_anomalies_are_not_linearizable() {
    // Two compare-and-sets from the same value both succeed.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 0), (0, 1), Response::Written);
    let a = done(&mut h, 1, Op::Cas("x", 0, 1), (2, 5), Response::Cas(true));
    let b = done(&mut h, 2, Op::Cas("x", 0, 2), (3, 6), Response::Cas(false));
    assert!(check(&h).unwrap().is_linearizable());
    h = h
        .entries()
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, mut e)| {
            if i == b {
                e.outcome = Outcome::Ok(Response::Cas(true));
            }
            e
        })
        .collect();
    let v = violation(&h);
    assert_eq!(v.linearized.len(), 2);
    let mut next: Vec<_> = v.next.iter().map(|(i, _)| *i).collect();
    next.sort_unstable();
    assert!(next == [b] || next == [a], "{next:?}");

    // A refusal while the value was the expected one.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    let refused = done(&mut h, 2, Op::Cas("x", 1, 2), (2, 3), Response::Cas(false));
    assert_eq!(violation(&h).next[0].0, refused);

    // A success on an absent key.
    let mut h = H::new();
    done(&mut h, 1, Op::Cas("x", 1, 2), (0, 1), Response::Cas(true));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
}

#[test]
fn an_indeterminate_write_can_explain_a_read() {
    // Only the indeterminate write explains the 2.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    let maybe = unsure(&mut h, 2, Op::Write("x", 2), (2, 3), Outcome::Indeterminate);
    done(&mut h, 3, Op::Read("x"), (10, 11), read(Some(2)));
    assert!(check(&h).unwrap().is_linearizable());
    // As a failure (it did not happen) it does not.
    let mut failed = h.clone();
    failed = failed
        .entries()
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, mut e)| {
            if i == maybe {
                e.outcome = Outcome::Fail;
            }
            e
        })
        .collect();
    assert!(matches!(verdict(&failed), Verdict::NotLinearizable(_)));

    // It may take effect after its client gave up...
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    unsure(&mut h, 2, Op::Write("x", 2), (2, 3), Outcome::Indeterminate);
    done(&mut h, 3, Op::Read("x"), (4, 5), read(Some(1)));
    done(&mut h, 3, Op::Read("x"), (6, 7), read(Some(2)));
    assert!(check(&h).unwrap().is_linearizable());
    // ...or never, and it may still be pending.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    h.push(Entry {
        process: 2,
        op: Op::Write("x", 2),
        invoke: ms(2),
        complete: None,
        outcome: Outcome::Indeterminate,
    });
    done(&mut h, 3, Op::Read("x"), (4, 5), read(Some(1)));
    done(&mut h, 3, Op::Read("x"), (8, 9), read(Some(1)));
    assert!(check(&h).unwrap().is_linearizable());

    // An indeterminate compare-and-set too, and a refusal explained by
    // an indeterminate write.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    unsure(
        &mut h,
        2,
        Op::Cas("x", 1, 5),
        (2, 3),
        Outcome::Indeterminate,
    );
    done(&mut h, 3, Op::Cas("x", 1, 6), (4, 5), Response::Cas(false));
    done(&mut h, 3, Op::Read("x"), (6, 7), read(Some(5)));
    assert!(check(&h).unwrap().is_linearizable());
}

#[test]
fn an_indeterminate_operation_cannot_save_these() {
    // Invoked after the read that needs it completed.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    let r = done(&mut h, 3, Op::Read("x"), (2, 3), read(Some(2)));
    unsure(&mut h, 2, Op::Write("x", 2), (5, 6), Outcome::Indeterminate);
    assert_eq!(violation(&h).next[0].0, r);

    // Needed twice: it takes effect at most once.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    unsure(
        &mut h,
        2,
        Op::Cas("x", 1, 2),
        (2, 3),
        Outcome::Indeterminate,
    );
    done(&mut h, 3, Op::Read("x"), (4, 5), read(Some(2)));
    done(&mut h, 3, Op::Read("x"), (6, 7), read(Some(1)));
    done(&mut h, 3, Op::Read("x"), (8, 9), read(Some(2)));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));

    // A compare-and-set whose expected value was never there.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    unsure(
        &mut h,
        2,
        Op::Cas("x", 7, 2),
        (2, 3),
        Outcome::Indeterminate,
    );
    done(&mut h, 3, Op::Read("x"), (4, 5), read(Some(2)));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));

    // A read of unknown result explains nothing.
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
    unsure(&mut h, 2, Op::Read("x"), (2, 3), Outcome::Indeterminate);
    done(&mut h, 3, Op::Read("x"), (4, 5), read(None));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
}

#[test]
fn keys_are_checked_apart_and_the_failing_one_is_named() {
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (0, 10), Response::Written);
    done(&mut h, 2, Op::Write("y", 1), (0, 1), Response::Written);
    done(&mut h, 2, Op::Read("x"), (2, 3), read(Some(1)));
    done(&mut h, 3, Op::Read("y"), (2, 3), read(Some(1)));
    // Across keys the real-time order is the same as within one.
    done(&mut h, 1, Op::Read("y"), (11, 12), read(Some(1)));
    let report = check(&h).unwrap();
    assert!(report.is_linearizable());
    assert_eq!((report.keys, report.ops), (2, 5));

    done(&mut h, 3, Op::Read("y"), (13, 14), read(None));
    let v = violation(&h);
    assert_eq!(v.key, "y");
    assert_eq!(v.key_ops, 4);
}

#[test]
fn inconsistent_histories_are_errors() {
    let mut h = H::new();
    done(&mut h, 1, Op::Write("x", 1), (5, 4), Response::Written);
    assert_eq!(
        check(&h),
        Err(HistoryError::CompletedBeforeInvoked { index: 0 })
    );
    let mut h = H::new();
    done(&mut h, 1, Op::Read("x"), (0, 1), read(None));
    done(&mut h, 1, Op::Read("x"), (2, 3), Response::Cas(true));
    assert_eq!(check(&h), Err(HistoryError::ResponseMismatch { index: 1 }));
    let mut h = H::new();
    h.push(Entry {
        process: 1,
        op: Op::Write("x", 1),
        invoke: ms(0),
        complete: None,
        outcome: Outcome::Ok(Response::Written),
    });
    assert_eq!(check(&h), Err(HistoryError::NoCompletion { index: 0 }));
}

#[test]
fn the_search_gives_up_after_its_budget() {
    let mut h = H::new();
    for p in 0..8 {
        done(
            &mut h,
            p,
            Op::Write("x", p as u32),
            (0, 10),
            Response::Written,
        );
    }
    done(&mut h, 9, Op::Read("x"), (11, 12), read(Some(99)));
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    let report = Checker::new().max_states(10).check(&h).unwrap();
    assert_eq!(
        report.verdict,
        Verdict::Unknown {
            key: "x",
            states: 11
        }
    );
    assert!(report.to_string().starts_with("unknown: key \"x\""));
}
