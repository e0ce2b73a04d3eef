//! The envelope's unit tests: decoding limits, borrowed names, the widest copy.

use super::*;
use prost::Message;
use std::borrow::Cow;

fn known(name: &[u8]) -> Option<&'static str> {
    (name == b"demo.v1.Counter").then_some("demo.v1.Counter")
}

#[test]
fn no_copy_of_a_request_is_longer_than_its_widest_copy() {
    let mut first = Envelope::request(
        9,
        300,
        "demo.v1.Counter",
        2,
        bytes::Bytes::from_static(b"x"),
    );
    first.deadline_us = 250_000;
    let widest = first.widest_copy_len(300, 250_000);
    assert_eq!(first.attempt, 1, "the envelope is left as it was");
    assert_eq!(
        (first.incarnation, first.cookie, first.ack_up_to),
        (0, 0, 0)
    );
    // Every combination a copy can carry: any attempt, an incarnation
    // and a cookie from a member's PONG, any ack below the request id.
    for attempt in [1, 2, 200, u32::MAX] {
        for incarnation in [0, 1, 1 << 40, u64::MAX] {
            for cookie in [0, 7, u64::MAX] {
                for ack_up_to in [0, 1, 127, 128, 299] {
                    let copy = Envelope {
                        attempt,
                        incarnation,
                        cookie,
                        ack_up_to,
                        ..first.clone()
                    };
                    assert!(copy.encoded_len() <= widest, "{copy:?}");
                }
            }
        }
    }
    // The widest copy is reached: a member's incarnation and cookie count.
    let copy = Envelope {
        attempt: u32::MAX,
        incarnation: u64::MAX,
        cookie: u64::MAX,
        ack_up_to: 300,
        ..first.clone()
    };
    assert_eq!(copy.encoded_len(), widest);
    assert!(first.encoded_len() + 20 < widest);
}

#[test]
fn a_deadline_field_is_never_zero_for_a_call_that_has_one() {
    let now = tokio::time::Instant::now();
    assert_eq!(deadline_us(None, now), 0);
    assert_eq!(
        deadline_us(Some(now), now),
        1,
        "due now still has a deadline"
    );
    assert_eq!(
        deadline_us(Some(now + std::time::Duration::from_millis(3)), now),
        3_000
    );
}

#[test]
fn metadata_over_its_caps_is_refused_while_decoding() {
    let with = |entries: usize, value_len: usize| {
        Envelope {
            version: VERSION,
            r#type: MessageType::Request as i32,
            session_id: 1,
            metadata: (0..entries)
                .map(|i| (format!("k{i}"), "v".repeat(value_len)))
                .collect(),
            ..Envelope::default()
        }
        .encode_to_vec()
    };
    assert!(Envelope::decode(with(MAX_METADATA_ENTRIES, 8).as_slice()).is_ok());
    let many = Envelope::decode(with(9_142, 0).as_slice()).unwrap_err();
    assert!(
        many.to_string().contains("more than 64 metadata entries"),
        "{many}"
    );
    let big = Envelope::decode(with(2, MAX_METADATA_BYTES).as_slice()).unwrap_err();
    assert!(
        big.to_string().contains("more than 16 KiB of metadata"),
        "{big}"
    );
    assert!(Envelope::decode_naming(with(65, 0).as_slice(), known).is_err());
}

#[test]
fn decode_naming_borrows_known_names_and_otherwise_decodes_as_prost() {
    for service in ["demo.v1.Counter", "demo.v1.Other", ""] {
        let env = Envelope {
            version: VERSION,
            r#type: MessageType::Request as i32,
            request_id: 7,
            session_id: u64::MAX,
            service: service.to_owned().into(),
            payload: bytes::Bytes::from_static(b"payload"),
            ack_up_to: 6,
            ..Envelope::default()
        };
        let bytes = env.encode_to_vec();
        let decoded = Envelope::decode_naming(bytes.as_slice(), known).unwrap();
        assert_eq!(decoded, env);
        assert_eq!(
            matches!(decoded.service, Cow::Borrowed(_)),
            service == "demo.v1.Counter"
        );
        // Every truncation: the same verdict as prost's own decode.
        for cut in 0..bytes.len() {
            let ours = Envelope::decode_naming(&bytes[..cut], known);
            let prost = Envelope::decode(&bytes[..cut]);
            assert_eq!(ours.is_ok(), prost.is_ok(), "cut at {cut}");
            if let (Ok(a), Ok(b)) = (ours, prost) {
                assert_eq!(a, b, "cut at {cut}");
            }
        }
    }
}
