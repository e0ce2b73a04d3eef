//! Hostile input on a real UDP socket: random bytes, truncated envelopes,
//! wrong versions, absurd lengths, client-bound types and a flood of fake
//! sessions. The server must keep answering a real request, count every
//! drop and keep its history within the caps.
#![allow(clippy::unwrap_used)]

mod server_support;

use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rpc_core::envelope::{Envelope, MessageType, VERSION};
use rpc_core::server::{HistoryConfig, Server, ServerHandle, ServerStats};
use server_support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Sends every datagram, pausing every `chunk` until the server has read
/// them all (so that the loopback receive buffer never overflows).
async fn send_paced(server: &ServerHandle, peer: &Peer, datagrams: &[Vec<u8>], chunk: usize) {
    let start = server.stats().received;
    for (i, d) in datagrams.iter().enumerate() {
        peer.send_raw(d).await;
        if (i + 1) % chunk == 0 {
            let want = start + i as u64 + 1;
            wait_stats(server, |s| s.received >= want).await;
        }
    }
    let want = start + datagrams.len() as u64;
    wait_stats(server, |s| s.received >= want).await;
}

/// Every received datagram is accounted for exactly once.
fn assert_accounted(s: &ServerStats) {
    assert_eq!(
        s.bad_input_dropped() + s.requests + s.acks + s.pings,
        s.received,
        "{s:#?}"
    );
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[tokio::test]
async fn garbage_is_dropped_counted_and_the_server_keeps_answering() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let junk_peer = Peer::new(server.local_addr()).await;
        let mut rng = StdRng::seed_from_u64(0x5EED);

        // Random bytes of random lengths (including empty datagrams).
        let random: Vec<Vec<u8>> = (0..500)
            .map(|_| {
                let n = rng.random_range(0..300);
                (0..n).map(|_| rng.random::<u8>()).collect()
            })
            .collect();
        // Every truncation of a valid request.
        let mut full = request(7, 1, ECHO);
        full.payload = vec![0x55; 40].into();
        full.metadata.insert("k", "v");
        let full = full.encode_to_vec();
        let truncated: Vec<Vec<u8>> = (1..full.len()).map(|n| full[..n].to_vec()).collect();
        // Wrong versions.
        let versions: Vec<Vec<u8>> = [0u32, 2, 99, u32::MAX]
            .iter()
            .map(|&v| {
                Envelope {
                    version: v,
                    ..request(7, 2, ADD)
                }
                .encode_to_vec()
            })
            .collect();
        // Absurd lengths: a payload claiming 2^62 bytes, a length past the
        // end, an overlong varint, invalid UTF-8 in the service name.
        let mut absurd = Vec::new();
        for claimed in [1u64 << 62, u64::MAX, 1_000_000, 60] {
            let mut d = vec![0x08, 0x01, 0x10, 0x01]; // version 1, type REQUEST
            d.push((12 << 3) | 2); // payload, length-delimited
            varint(claimed, &mut d);
            d.extend_from_slice(&[1, 2, 3]);
            absurd.push(d);
        }
        absurd.push(vec![
            0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
        ]);
        absurd.push(vec![0x08, 0x01, 0x2A, 0x02, 0xC3, 0x28]); // service = invalid UTF-8
                                                               // Well-formed but not for a server: client-bound types, no session,
                                                               // unknown type and protocol numbers.
        let mut unexpected = Vec::new();
        for ty in [
            MessageType::Reply,
            MessageType::Accept,
            MessageType::Error,
            MessageType::InProgress,
            MessageType::Pong,
            MessageType::Unspecified,
        ] {
            unexpected.push(
                Envelope {
                    r#type: ty as i32,
                    ..request(7, 3, ADD)
                }
                .encode_to_vec(),
            );
        }
        unexpected.push(
            Envelope {
                r#type: 42,
                ..request(7, 3, ADD)
            }
            .encode_to_vec(),
        );
        unexpected.push(request(0, 3, ADD).encode_to_vec());
        unexpected.push(
            Envelope {
                protocol: 9,
                ..request(7, 3, ADD)
            }
            .encode_to_vec(),
        );

        for (set, chunk) in [
            (&random, 50),
            (&truncated, 50),
            (&versions, 50),
            (&absurd, 50),
            (&unexpected, 50),
        ] {
            send_paced(&server, &junk_peer, set, chunk).await;
        }
        let s = server.stats();
        assert_accounted(&s);
        assert_eq!(
            s.version_dropped,
            versions.len() as u64 + count_version_like(&random) + count_version_like(&truncated),
            "{s:#?}"
        );
        assert!(s.malformed_dropped >= absurd.len() as u64, "{s:#?}");
        assert!(s.unexpected_dropped >= unexpected.len() as u64, "{s:#?}");
        assert!(
            s.malformed_dropped >= 400,
            "most random bytes do not decode: {s:#?}"
        );

        // A real client is still served.
        let real = Peer::new(server.local_addr()).await;
        let answer = real.call(&request(1234, 1, ADD)).await;
        assert_eq!(msg_type(&answer), MessageType::Reply);
        assert_eq!(answer.incarnation, server.incarnation());
        // Nothing hostile ran the counter, except valid truncations that
        // happened to be complete Echo requests.
        assert_eq!(value(&answer), 1);
        assert!(state.runs() >= 1);
    })
    .await
    .unwrap();
}

/// How many of these datagrams decode as an envelope with a version other
/// than 1 (the server counts those as version drops, not malformed).
fn count_version_like(set: &[Vec<u8>]) -> u64 {
    set.iter()
        .filter(|d| matches!(Envelope::decode(d.as_slice()), Ok(e) if e.version != VERSION))
        .count() as u64
}

#[tokio::test]
async fn a_flood_of_metadata_entries_is_refused_while_decoding() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        // 8,000 entries fit in one datagram; decoding them all before the
        // unknown service was refused cost 40 times a 64 KB payload.
        let mut flood = request(31, 1, ADD);
        flood.service = "no.such.Service".into();
        flood.metadata = (0..8_000)
            .map(|i| (format!("{i:x}"), String::new()))
            .collect();
        let bytes = flood.encode_to_vec();
        assert!(bytes.len() < 65_000, "{}", bytes.len());
        peer.send_raw(&bytes).await;
        let s = wait_stats(&server, |s| s.malformed_dropped == 1).await;
        assert_accounted(&s);
        // Within the caps, the same request is served.
        let mut fine = request(31, 2, ADD);
        fine.metadata = (0..64).map(|i| (format!("k{i}"), "v")).collect();
        assert_eq!(value(&peer.call(&fine).await), 1);
        assert_eq!(state.runs(), 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ten_thousand_fake_sessions_stay_within_the_caps() {
    tokio::time::timeout(T, async {
        let history = HistoryConfig {
            max_sessions: 1_000,
            max_entries: 5_000,
            ..HistoryConfig::default()
        };
        let (server, state) = serve(Server::builder().history(history)).await;
        let flood = Peer::new(server.local_addr()).await;
        let mut rng = StdRng::seed_from_u64(42);
        let fakes: Vec<Vec<u8>> = (0..10_000)
            .map(|_| {
                let mut r = request(
                    rng.random_range(1..u64::MAX),
                    rng.random_range(1..1_000),
                    ADD,
                );
                r.ack_up_to = 0;
                r.encode_to_vec()
            })
            .collect();
        send_paced(&server, &flood, &fakes, 64).await;
        let s = wait_stats(&server, |s| s.executions == 10_000).await;
        assert!(s.history_sessions <= 1_000, "{s:#?}");
        assert!(s.history_completed <= 5_000, "{s:#?}");
        assert_eq!(s.sessions_evicted, 9_000, "{s:#?}");
        assert!(s.evicted_session_limit > 0, "{s:#?}");
        assert_accounted(&s);

        let real = Peer::new(server.local_addr()).await;
        let answer = real.call(&request(7_777, 1, ADD)).await;
        assert_eq!(msg_type(&answer), MessageType::Reply);
        assert_eq!(value(&answer), 10_001);
        assert_eq!(state.runs(), 10_001);
        // And its duplicate is still filtered.
        assert_eq!(real.call(&request(7_777, 1, ADD)).await, answer);
        assert_eq!(state.runs(), 10_001);
    })
    .await
    .unwrap();
}
