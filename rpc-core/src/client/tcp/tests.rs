//! The link's tests.

use super::*;

fn pending(frame: &'static [u8]) -> Pending {
    Pending {
        frame: Bytes::from_static(frame),
        kind: Kind::Ping,
        first_gen: None,
        stored_at: Instant::now(),
        answered: false,
    }
}

#[test]
fn outstanding_stays_sorted_and_drops_through_the_low_water_mark() {
    let mut o = Outstanding::default();
    for id in [3u64, 5, 4, 1, 9] {
        o.get_or_insert_with(id, || pending(b"x"));
    }
    // an existing entry is found, not made again
    o.get_or_insert_with(4, || pending(b"again")).answered = true;
    let ids: Vec<u64> = o.0.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids, vec![1, 3, 4, 5, 9]);
    assert!(o
        .get(4)
        .is_some_and(|p| p.answered && p.frame[..] == b"x"[..]));
    assert!(o.get(2).is_none() && o.get_mut(10).is_none());
    o.remove(5);
    o.remove(6);
    o.drop_through(3);
    let ids: Vec<u64> = o.0.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids, vec![4, 9]);
    assert!(o.any_unanswered(), "9 is not answered");
    o.drop_through(u64::MAX);
    assert!(o.0.is_empty() && !o.any_unanswered());
}

#[test]
fn frames_join_a_batch_whole_and_uncopied() {
    let from: SocketAddr = ([127, 0, 0, 1], 9).into();
    let mut batch = RecvBatch::new(1, 4);
    let long = Bytes::from_static(b"longer than a slot");
    batch.push_frame(Bytes::from_static(b"abcd"), from);
    batch.push_frame(long.clone(), from);
    assert_eq!(batch.len(), 2);
    let got: Vec<&[u8]> = batch.iter().map(|(d, _)| d).collect();
    assert_eq!(
        got,
        vec![&b"abcd"[..], &long[..]],
        "not truncated to the slot"
    );
    let taken: Vec<Bytes> = batch.take_frames().map(|(f, _)| f).collect();
    assert_eq!(
        taken[1].as_ptr(),
        long.as_ptr(),
        "the same bytes, not a copy"
    );
    assert!(batch.is_empty());
    batch.push_frame(long, from);
    batch.clear();
    assert!(batch.is_empty());
}
