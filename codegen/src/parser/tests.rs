//! The parser's tests: the whole grammar, recovery, and garbage.

use super::parse;
use crate::ast::{self, FieldType, Label, Member, ReservedItem};

fn ok(src: &str) -> ast::File {
    let (file, errors) = parse(src);
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
    file
}

fn messages(src: &str) -> Vec<String> {
    parse(src).1.into_iter().map(|e| e.message).collect()
}

#[test]
fn parses_the_whole_grammar() {
    let file = ok(r#"
        /// File docs.
        package demo.v1;
        import "common.idl";
        /// A message.
        message M {
          optional string a = 1;
          repeated other.T b = 2;
          map<string, int64> c = 3;
          oneof choice { string d = 4; /** x */ bool e = 5; }
          reserved 9, 12 to 15, 20 to max;
          reserved "old";
        }
        enum E { ZERO = 0; NEG = -1; }
        service S {
          /// Docs.
          rpc A(M) returns (M) raises (M) [idempotent, timeout = 250ms, protocol = RR,];
          oneway rpc B(M);
        }
    "#);
    assert_eq!(file.docs, vec!["File docs.".to_owned()]);
    assert_eq!(
        file.package.as_ref().map(ast::Path::dotted).as_deref(),
        Some("demo.v1")
    );
    assert_eq!(file.imports[0].path, "common.idl");
    assert_eq!(file.items.len(), 3);
    let ast::Item::Message(m) = &file.items[0] else {
        panic!("not a message")
    };
    assert_eq!(m.docs, vec!["A message.".to_owned()]);
    assert_eq!(m.members.len(), 6);
    let Member::Field(b) = &m.members[1] else {
        panic!("not a field")
    };
    assert!(matches!(b.label, Label::Repeated(_)));
    assert!(matches!(&b.ty, FieldType::Named(p) if p.dotted() == "other.T"));
    let Member::Reserved(r) = &m.members[4] else {
        panic!("not reserved")
    };
    assert!(matches!(&r.items[2], ReservedItem::Range { end: None, .. }));
    let ast::Item::Enum(e) = &file.items[1] else {
        panic!("not an enum")
    };
    assert_eq!(e.values[1].number.as_i64(), Some(-1));
    let ast::Item::Service(s) = &file.items[2] else {
        panic!("not a service")
    };
    assert_eq!(s.methods[0].attributes.len(), 3);
    assert!(s.methods[0].raises.is_some());
    assert!(s.methods[1].oneway.is_some() && s.methods[1].response.is_none());
}

#[test]
fn keywords_are_usable_as_names() {
    let file = ok("message message { int32 optional = 1; repeated int32 repeated = 2; map map = 3; int32 reserved = 4; }");
    let ast::Item::Message(m) = &file.items[0] else {
        panic!("not a message")
    };
    assert_eq!(m.members.len(), 4);
}

#[test]
fn missing_semicolon_reports_what_was_expected() {
    let src = "message A {\n  int32 a = 1\n}\n";
    let (_, errors) = parse(src);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].message, "expected `;` after field, found `}`");
    // Points right after `1`, where the `;` belongs.
    assert_eq!(errors[0].span.start, src.find("1\n").unwrap_or(0) + 1);
}

#[test]
fn recovers_and_reports_every_error() {
    let msgs = messages("message A { int32 = 1; string b 2; bool c = 3; }\nenum E { X 0; Y = 1; }\nservice S { rpc M(A) [x]; }\nmessage B { int32 ok = 1; }");
    assert_eq!(
        msgs,
        vec![
            "expected a field name after the field's type, found `=`",
            "expected `=` after the field name, found `2`",
            "expected `=` after the enum value name, found `0`",
            "method `M` has no `returns (..)`",
        ]
    );
    let (file, _) = parse("message A { int32 = 1; bool c = 3; } message B {}");
    assert_eq!(file.items.len(), 2);
}

#[test]
fn oneway_with_reply_or_error_is_a_syntax_error() {
    let msgs = messages("service S { oneway rpc M(A) returns (B) raises (C); }");
    assert_eq!(
        msgs,
        vec![
            "a `oneway` method has no reply",
            "a `oneway` method cannot raise an error"
        ]
    );
}

#[test]
fn unclosed_block_and_stray_brace() {
    assert_eq!(
        messages("message A { int32 a = 1;"),
        vec!["expected `}` to close message `A`, found end of file"]
    );
    assert_eq!(messages("}"), vec!["unexpected `}`"]);
    assert_eq!(
        messages("map<string, map<string, int32>>"),
        vec!["expected `message`, `enum`, `service`, `import` or `package`, found `map`"]
    );
    assert_eq!(
        messages("message A { map<string, map<string, int32>> m = 1; }"),
        vec!["a map value cannot be a map"]
    );
}

/// Garbage gets errors (with spans inside the text) and the parser
/// returns. The parser has no step counter to bound structurally, so
/// the bound is a thread that must finish within 60 s: a parse takes
/// microseconds, and only a loop without progress comes near it. (A
/// hang is then a failure naming the cause instead of a stuck run.)
#[test]
fn never_loops_on_garbage() {
    const GARBAGE: [&str; 9] = [
        "{{{{",
        "}}}}",
        "message",
        "message A {",
        "service S { rpc",
        "[[[",
        ";;;",
        "enum E { = ; }",
        "message A { oneof { } }",
    ];
    /// Words and signs of the grammar, shuffled into token soup.
    const SOUP: [&str; 26] = [
        "message",
        "service",
        "rpc",
        "enum",
        "oneof",
        "returns",
        "map",
        "repeated",
        "oneway",
        "stream",
        "package",
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        "<",
        ">",
        ";",
        "=",
        ",",
        ".",
        "A",
        "7",
        "/// doc\n",
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let check = |src: &str, must_fail: bool| {
            let (_, errors) = parse(src);
            assert!(!must_fail || !errors.is_empty(), "no error for {src:?}");
            for e in &errors {
                assert!(
                    e.span.start <= e.span.end && e.span.end <= src.len(),
                    "span {:?} outside {src:?}",
                    e.span
                );
            }
        };
        for src in GARBAGE {
            check(src, true);
        }
        // 2000 sequences of up to 40 tokens, from a fixed seed.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..2000 {
            let len = next(40);
            let src: Vec<&str> = (0..len).map(|_| SOUP[next(SOUP.len())]).collect();
            check(&src.join(" "), false);
        }
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the parser did not return within 60 s: it loops on garbage")
        }
        // The thread panicked: its assertion is on stderr.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("a garbage check failed (see the message above)")
        }
    }
}
