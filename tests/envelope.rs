//! `rpc_core::envelope` is written by hand; `idl/rpc/envelope.idl` is the
//! contract other languages read. Both must describe the same bytes: each
//! test builds a fully populated message on one side, decodes it as the
//! other and compares every field, so any drift (a renumbered field, a
//! changed type, a renamed enum value) fails here.

use bytes::Bytes;
use prost::Message as _;
use rpc_core::envelope as hand;
use std::collections::HashMap;

rpc_core::idl!("../idl/rpc/envelope.idl");

use rpc::v1 as gen;

/// Non-default values in every field, chosen so that a field read with the
/// wrong wire type or number cannot come out equal (large varints, values
/// that do not fit 32 bits, non-ASCII text).
fn hand_envelope() -> hand::Envelope {
    hand::Envelope {
        version: hand::VERSION,
        r#type: hand::MessageType::InProgress as i32,
        request_id: 0x0123_4567_89AB_CDEF,
        session_id: 0xFEDC_BA98_7654_3210,
        service: "demo.v1.Counter".into(),
        instance: "instance-ü".into(),
        method_id: 0xF714_25F5,
        incarnation: u64::MAX - 7,
        deadline_us: 1_500_000_000_123,
        attempt: 42,
        status: Some(Box::new(hand::WireStatus {
            code: rpc_core::Code::FailedPrecondition.as_i32(),
            message: "overdrawn by 5".into(),
            details_type: "demo.v1.Overdrawn".into(),
            details: Bytes::from_static(&[0x08, 0x0A, 0x10, 0x0F]),
        })),
        payload: Bytes::from_static(b"\x00\x01payload\xff"),
        metadata: [("clock", "17"), ("auth", "token")].into_iter().collect(),
        protocol: hand::ExchangeProtocol::Rra as i32,
        ack_up_to: 0x0123_4567_89AB_CDEE,
        want_accept: true,
        idempotent: true,
        cookie: 0x8000_0000_0000_0001,
    }
}

fn assert_same(h: &hand::Envelope, g: &gen::Envelope) {
    assert_eq!(h.version, g.version, "version");
    assert_eq!(h.r#type, g.r#type, "type");
    assert_eq!(h.request_id, g.request_id, "request_id");
    assert_eq!(h.session_id, g.session_id, "session_id");
    assert_eq!(h.service, g.service, "service");
    assert_eq!(h.instance, g.instance, "instance");
    assert_eq!(h.method_id, g.method_id, "method_id");
    assert_eq!(h.incarnation, g.incarnation, "incarnation");
    assert_eq!(h.deadline_us, g.deadline_us, "deadline_us");
    assert_eq!(h.attempt, g.attempt, "attempt");
    assert_eq!(h.cookie, g.cookie, "cookie");
    match (&h.status, &g.status) {
        (Some(hs), Some(gs)) => {
            assert_eq!(hs.code, gs.code, "status.code");
            assert_eq!(hs.message, gs.message, "status.message");
            assert_eq!(hs.details_type, gs.details_type, "status.details_type");
            assert_eq!(hs.details, gs.details, "status.details");
        }
        (None, None) => {}
        (hs, gs) => panic!("status differs: {hs:?} vs {}", gs.is_some()),
    }
    assert_eq!(h.payload, g.payload, "payload");
    assert_eq!(
        h.metadata,
        g.metadata.iter().collect::<rpc_core::Metadata>(),
        "metadata"
    );
    assert_eq!(h.protocol, g.protocol, "protocol");
    assert_eq!(h.ack_up_to, g.ack_up_to, "ack_up_to");
    assert_eq!(h.want_accept, g.want_accept, "want_accept");
    assert_eq!(h.idempotent, g.idempotent, "idempotent");
}

#[test]
fn hand_written_envelope_decodes_as_the_idl_envelope() -> anyhow::Result<()> {
    let h = hand_envelope();
    let bytes = h.encode_to_vec();
    // `Message` is implemented by hand: its length must be the bytes written.
    assert_eq!(h.encoded_len(), bytes.len());
    let g = gen::Envelope::decode(bytes.as_slice())?;
    assert_same(&h, &g);
    // Nothing was left over as an unknown field: re-encoding gives the same
    // length (field order within a message is the same on both sides).
    assert_eq!(g.encode_to_vec().len(), bytes.len());
    Ok(())
}

#[test]
fn idl_envelope_decodes_as_the_hand_written_envelope() -> anyhow::Result<()> {
    let h0 = hand_envelope();
    let g = gen::Envelope::decode(h0.encode_to_vec().as_slice())?;
    // Built on the generated side from scratch, not just passed through.
    let g = gen::Envelope {
        version: g.version,
        r#type: gen::MessageType::Accept as i32,
        request_id: g.request_id + 1,
        session_id: g.session_id,
        service: g.service.clone(),
        instance: g.instance.clone(),
        method_id: g.method_id,
        incarnation: g.incarnation,
        deadline_us: g.deadline_us,
        attempt: g.attempt + 1,
        status: Some(gen::Status {
            code: 10,
            message: "outcome unknown: server restarted".into(),
            details_type: hand::SERVER_RESTARTED.into(),
            details: Bytes::new(),
        }),
        payload: Bytes::from_static(b"reply"),
        metadata: HashMap::from([("trace".to_owned(), "abc".to_owned())]),
        protocol: gen::ExchangeProtocol::R as i32,
        ack_up_to: 9,
        want_accept: false,
        idempotent: true,
        cookie: g.cookie ^ 0xFF,
    };
    let h = hand::Envelope::decode(g.encode_to_vec().as_slice())?;
    assert_same(&h, &g);
    assert_eq!(h.encode_to_vec(), g.encode_to_vec(), "same bytes both ways");
    assert_eq!(h.encoded_len(), g.encoded_len());
    // A truncated envelope is a decode error (cut inside the payload: one
    // that names the field), never a panic.
    let bytes = h.encode_to_vec();
    let inside_payload = bytes
        .windows(h.payload.len())
        .position(|w| w == h.payload)
        .map(|at| at + 1);
    assert!(inside_payload.is_some());
    let mut errors = 0;
    for cut in 1..bytes.len() {
        if let Err(e) = hand::Envelope::decode(&bytes[..cut]) {
            errors += 1;
            if Some(cut) == inside_payload {
                assert!(e.to_string().contains("Envelope.payload"), "{e}");
            }
        }
    }
    assert!(
        errors > bytes.len() / 2,
        "{errors} of {} cuts refused",
        bytes.len()
    );
    Ok(())
}

#[test]
fn enums_have_the_same_names_and_numbers() {
    let message_types = [
        (
            hand::MessageType::Unspecified,
            gen::MessageType::Unspecified,
        ),
        (hand::MessageType::Request, gen::MessageType::Request),
        (hand::MessageType::Reply, gen::MessageType::Reply),
        (hand::MessageType::Ack, gen::MessageType::Ack),
        (hand::MessageType::Accept, gen::MessageType::Accept),
        (hand::MessageType::Error, gen::MessageType::Error),
        (hand::MessageType::InProgress, gen::MessageType::InProgress),
        (hand::MessageType::Ping, gen::MessageType::Ping),
        (hand::MessageType::Pong, gen::MessageType::Pong),
    ];
    for (h, g) in message_types {
        assert_eq!(h as i32, g as i32, "{h:?}");
    }
    // Every number the IDL defines is known by hand, and no other.
    for n in -1..=32 {
        assert_eq!(
            hand::MessageType::try_from(n).is_ok(),
            gen::MessageType::try_from(n).is_ok(),
            "MessageType {n}"
        );
        assert_eq!(
            hand::ExchangeProtocol::try_from(n).is_ok(),
            gen::ExchangeProtocol::try_from(n).is_ok(),
            "ExchangeProtocol {n}"
        );
    }
    let protocols = [
        (
            hand::ExchangeProtocol::Unspecified,
            gen::ExchangeProtocol::Unspecified,
        ),
        (hand::ExchangeProtocol::R, gen::ExchangeProtocol::R),
        (hand::ExchangeProtocol::Rr, gen::ExchangeProtocol::Rr),
        (hand::ExchangeProtocol::Rra, gen::ExchangeProtocol::Rra),
    ];
    for (h, g) in protocols {
        assert_eq!(h as i32, g as i32, "{h:?}");
    }
    // The runtime's protocols map onto the IDL's values.
    assert_eq!(
        hand::ExchangeProtocol::from(rpc_core::Protocol::RRA) as i32,
        gen::ExchangeProtocol::Rra as i32
    );
    assert_eq!(
        <gen::Envelope as prost::Name>::full_name(),
        "rpc.v1.Envelope"
    );
    assert_eq!(<gen::Status as prost::Name>::full_name(), "rpc.v1.Status");
}

#[test]
fn the_default_envelope_is_empty_on_the_wire() {
    // proto3: no field is sent at its default value on either side.
    assert!(hand::Envelope::default().encode_to_vec().is_empty());
    assert!(gen::Envelope::default().encode_to_vec().is_empty());
}
