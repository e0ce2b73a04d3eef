//! Tests of [`Metadata`] and its wire format.

use super::*;

#[test]
fn insert_replace_remove_keep_order_and_compact() {
    let mut md = Metadata::new();
    assert!(!md.insert("a", "1"));
    assert!(!md.insert(String::from("b"), "2"));
    assert!(md.insert("a", "3"));
    assert_eq!(md.iter().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
    assert_eq!(md.remove("a").as_deref(), Some("3"));
    assert!(!md.discard("a"));
    assert_eq!(md.get("b"), Some("2"));
    for i in 0..200 {
        md.insert("x", i.to_string());
    }
    assert!(
        md.text.len() <= 256 + 8,
        "replaced values are compacted away"
    );
    assert_eq!(md.get("x"), Some("199"));
    assert_eq!(md.text_len(), 2 + 4);
}

#[test]
fn equality_ignores_order() {
    let a: Metadata = [("k", "v"), ("j", "w")].into_iter().collect();
    let b: Metadata = [("j", "w"), ("k", "v")].into_iter().collect();
    assert_eq!(a, b);
    let c: Metadata = [("j", "w"), ("k", "x")].into_iter().collect();
    assert_ne!(a, c);
    assert_eq!(format!("{a:?}"), r#"{"k": "v", "j": "w"}"#);
}

#[test]
fn wire_format_is_prosts_map_and_reads_back() {
    use prost::encoding::{hash_map, string, DecodeContext, WireType};
    let md: Metadata = [
        ("traceparent", "00-ab-cd-01"),
        ("", "empty key"),
        ("empty value", ""),
    ]
    .into_iter()
    .collect();
    let mut ours = Vec::new();
    wire::encode(13, &md, &mut ours);
    assert_eq!(ours.len(), wire::encoded_len(13, &md));
    // Each entry as prost writes a one-entry map.
    let mut theirs = Vec::new();
    for (k, v) in &md {
        let one: std::collections::HashMap<String, String> =
            [(k.to_owned(), v.to_owned())].into_iter().collect();
        hash_map::encode(
            string::encode,
            string::encoded_len,
            string::encode,
            string::encoded_len,
            13,
            &one,
            &mut theirs,
        );
    }
    assert_eq!(ours, theirs);

    let mut back = Metadata::new();
    let mut buf = &ours[..];
    while !buf.is_empty() {
        let (tag, wire) = prost::encoding::decode_key(&mut buf).expect("key");
        assert_eq!((tag, wire), (13, WireType::LengthDelimited));
        wire::merge_entry(
            wire,
            &mut back,
            &mut buf,
            DecodeContext::default(),
            (64, 16 << 10),
        )
        .expect("entry");
    }
    assert_eq!(back, md);
}

#[test]
fn random_bytes_never_panic_and_agree_with_prost() {
    use prost::encoding::{hash_map, string, DecodeContext, WireType};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let alphabet = [
        0x0a, 0x12, 0x18, 0x80, 0x00, 0x01, 0x02, 0x03, 0x7f, 0xff, 0xc3, 0xa9, b'k',
    ];
    for _ in 0..20_000 {
        let len = rng.random_range(0..12);
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        let mut ours = Metadata::new();
        let mut buf = &bytes[..];
        let mine = wire::merge_entry(
            WireType::LengthDelimited,
            &mut ours,
            &mut buf,
            DecodeContext::default(),
            (64, 16 << 10),
        );
        let mut theirs = std::collections::HashMap::<String, String>::new();
        let mut buf = &bytes[..];
        let prost = hash_map::merge(
            string::merge,
            string::merge,
            &mut theirs,
            &mut buf,
            DecodeContext::default(),
        );
        assert_eq!(mine.is_ok(), prost.is_ok(), "{bytes:02x?}");
        if mine.is_ok() {
            assert_eq!(ours, theirs.iter().collect::<Metadata>(), "{bytes:02x?}");
        }
    }
}

#[test]
fn hostile_entries_are_refused_or_read_as_protobuf_reads_them() {
    use prost::encoding::{DecodeContext, WireType};
    let read = |bytes: &[u8]| {
        let mut md = Metadata::new();
        let mut buf = bytes;
        wire::merge_entry(
            WireType::LengthDelimited,
            &mut md,
            &mut buf,
            DecodeContext::default(),
            (2, 16),
        )
        .map(|()| md)
    };
    // Value before key, an unknown field between them, a repeated key.
    let md = read(&[11, 0x12, 1, b'v', 0x18, 7, 0x0a, 1, b'x', 0x0a, 1, b'k']).expect("valid");
    assert_eq!(md.iter().collect::<Vec<_>>(), [("k", "v")]);
    assert!(
        read(&[3, 0x0a, 5, b'k']).is_err(),
        "string longer than the entry"
    );
    assert!(
        read(&[9, 0x0a, 1, b'k']).is_err(),
        "entry longer than the buffer"
    );
    assert!(read(&[4, 0x0a, 2, 0xff, 0xfe]).is_err(), "not UTF-8");
    // A length that runs past the entry into what follows it.
    assert!(
        read(&[2, 0x0a, 0x80, 0x00, 0x00, 0x00]).is_err(),
        "length past the entry"
    );
    assert!(
        read(&[1, 0x0a, 0x03, b'a', b'b', b'c']).is_err(),
        "key past the entry"
    );
    assert!(
        read(&[7, 0x0a, 1, b'k', 0x12, 2, 0xc3, 0x28]).is_err(),
        "not UTF-8, usual shape"
    );
    let md = read(&[8, 0x0a, 1, b'k', 0x12, 3, 0xc3, 0xa9, b'!']).expect("UTF-8 value");
    assert_eq!(md.get("k"), Some("\u{e9}!"));
    let md = read(&[3, 0x12, 1, b'v']).expect("no key");
    assert_eq!(md.get(""), Some("v"));
    assert!(
        read(&[
            19, 0x0a, 17, b'k', b'k', b'k', b'k', b'k', b'k', b'k', b'k', b'k', b'k', b'k', b'k',
            b'k', b'k', b'k', b'k', b'k'
        ])
        .is_err(),
        "over the byte cap"
    );
}
