//! The front end never panics: random bytes, random token soups and
//! mutations of the valid fixtures, a bounded number of cases each.
//! On every input it either builds a model (and the `.proto` back end runs
//! on it) or returns a non-empty list of rendered diagnostics.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use std::path::Path;

const CASES: u32 = 512;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs the whole front end on `text` as if it were a file of the valid
/// fixtures (so that its imports can resolve) and checks the outcome.
fn check(text: &str) {
    // The lexer's spans are in bounds and on character boundaries.
    let (tokens, _) = rpc_codegen::lexer::lex(text);
    for t in &tokens {
        assert!(t.span.start <= t.span.end && t.span.end <= text.len());
        assert!(text.is_char_boundary(t.span.start) && text.is_char_boundary(t.span.end));
    }
    match rpc_codegen::load_source(Path::new("tests/fixtures/valid/fuzzed.idl"), text) {
        Ok(model) => {
            let files = rpc_codegen::proto::generate(&model);
            assert_eq!(files.len(), model.files.len());
        }
        Err(d) => {
            assert!(!d.is_empty());
            let rendered = d.render();
            assert!(rendered.starts_with("error: "));
            for item in &d.items {
                assert!(item.rendered.contains(" --> "));
            }
        }
    }
}

const TOKENS: &[&str] = &[
    "package",
    "import",
    "message",
    "enum",
    "service",
    "rpc",
    "oneway",
    "returns",
    "raises",
    "optional",
    "repeated",
    "map",
    "oneof",
    "reserved",
    "to",
    "max",
    "stream",
    "option",
    "int32",
    "string",
    "bytes",
    "double",
    "bool",
    "Empty",
    "Offset",
    "demo",
    "v1",
    "demo.v1.Mode",
    "demo.common.Timestamp",
    "Mode",
    "MODE_UNSPECIFIED",
    "self",
    "type",
    "x",
    "y",
    "idempotent",
    "protocol",
    "R",
    "RR",
    "RRA",
    "timeout",
    "retries",
    "style",
    "sync",
    "async",
    "deferred",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "<",
    ">",
    ";",
    ",",
    "=",
    ".",
    "-",
    "0",
    "1",
    "-1",
    "19000",
    "536870912",
    "99999999999999999999999",
    "250ms",
    "5s",
    "3x",
    "\"common.idl\"",
    "\"demo.idl\"",
    "\"x\"",
    "\"unterminated",
    "\"esc\\q\"",
    "/// doc\n",
    "// comment\n",
    "/* block */",
    "/*",
    "\n",
    "\t",
    "é",
    "@",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec((0..TOKENS.len(), prop::bool::ANY), 0..80).prop_map(|picks| {
        let mut s = String::new();
        for (i, space) in picks {
            s.push_str(TOKENS[i]);
            if space {
                s.push(' ');
            }
        }
        s
    })
}

fn fixtures() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("tests/fixtures/valid").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "idl") {
            out.push(std::fs::read_to_string(path).unwrap());
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(a, t)| Mutation::Insert(a, t)),
        (any::<usize>(), 1usize..80).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn boundary(s: &str, i: usize) -> usize {
    let mut i = if s.is_empty() { 0 } else { i % (s.len() + 1) };
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(mut s: String, mutations: &[Mutation]) -> String {
    for m in mutations {
        match *m {
            Mutation::Delete(a, n) => {
                let a = boundary(&s, a);
                let b = boundary(&s, (a + n).min(s.len()));
                s.replace_range(a..b.max(a), "");
            }
            Mutation::Insert(a, t) => {
                let a = boundary(&s, a);
                s.insert_str(a, TOKENS[t]);
            }
            Mutation::Duplicate(a, n) => {
                let a = boundary(&s, a);
                let b = boundary(&s, (a + n).min(s.len())).max(a);
                let piece = s[a..b].to_owned();
                s.insert_str(b, &piece);
            }
            Mutation::Truncate(a) => {
                let a = boundary(&s, a);
                s.truncate(a);
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_soups_never_panic(text in soup()) {
        check(&text);
    }

    #[test]
    fn mutated_fixtures_never_panic(which in any::<usize>(), mutations in prop::collection::vec(mutation(), 1..6)) {
        let all = fixtures();
        let text = mutate(all[which % all.len()].clone(), &mutations);
        check(&text);
    }
}

/// Raw bytes through the file path (UTF-8 check included), fewer cases
/// because each one writes a file.
#[test]
fn random_files_never_panic() {
    let dir = std::env::temp_dir().join(format!("rpc-front-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("random.idl");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(any::<u8>(), 0..300), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        match rpc_codegen::load(&path) {
            Ok(_) => {}
            Err(d) => prop_assert!(!d.is_empty()),
        }
        Ok(())
    });
    std::fs::remove_dir_all(&dir).unwrap();
    result.unwrap();
}
