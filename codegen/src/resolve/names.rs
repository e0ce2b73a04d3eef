//! How IDL names become Rust names, and which names Rust cannot take.
//!
//! The word splitting is the one of the `heck` crate (which prost-build
//! uses), so these functions give exactly the names prost-build and the
//! Rust back end generate:
//! - fields and methods: [`snake_case`] (`serverReceiveNs` -> `server_receive_ns`),
//! - messages, enums, services and oneofs: [`upper_camel_case`],
//! - enum values: [`enum_value`] (UpperCamelCase with the enum's name
//!   stripped as a prefix: `MODE_UNSPECIFIED` in `Mode` -> `Unspecified`).
//!
//! Keywords that can be raw identifiers (`type` -> `r#type`) are fine
//! ([`needs_raw`]); `self`, `super`, `crate` and `Self` cannot be, nor can
//! `_` ([`is_forbidden`]).

/// Splits `name` into words: at every non-alphanumeric character, between a
/// lowercase and an uppercase letter (`fooBar`), and before the last
/// uppercase letter of a run followed by a lowercase one (`HTTPServer`).
pub fn words(name: &str) -> Vec<&str> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Boundary,
        Lower,
        Upper,
    }
    let mut out = Vec::new();
    for word in name.split(|c: char| !c.is_alphanumeric()) {
        let mut chars = word.char_indices().peekable();
        let mut init = 0;
        let mut mode = Mode::Boundary;
        while let Some((i, c)) = chars.next() {
            if let Some(&(next_i, next)) = chars.peek() {
                let next_mode = if c.is_lowercase() {
                    Mode::Lower
                } else if c.is_uppercase() {
                    Mode::Upper
                } else {
                    mode
                };
                if next_mode == Mode::Lower && next.is_uppercase() {
                    out.push(&word[init..next_i]);
                    init = next_i;
                    mode = Mode::Boundary;
                } else if mode == Mode::Upper && c.is_uppercase() && next.is_lowercase() {
                    out.push(&word[init..i]);
                    init = i;
                    mode = Mode::Boundary;
                } else {
                    mode = next_mode;
                }
            } else {
                out.push(&word[init..]);
                break;
            }
        }
    }
    out.retain(|w| !w.is_empty());
    out
}

/// `snake_case`, as heck's `to_snake_case`.
pub fn snake_case(name: &str) -> String {
    words(name)
        .iter()
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join("_")
}

/// `UpperCamelCase`, as heck's `to_upper_camel_case`.
pub fn upper_camel_case(name: &str) -> String {
    let mut out = String::new();
    for w in words(name) {
        let mut chars = w.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(&chars.as_str().to_lowercase());
        }
    }
    out
}

/// The Rust variant name of enum value `value` of enum `enum_name`, as
/// prost-build: UpperCamelCase, minus the enum's UpperCamelCase name when it
/// is a prefix followed by an uppercase letter.
pub fn enum_value(enum_name: &str, value: &str) -> String {
    let prefix = upper_camel_case(enum_name);
    let name = upper_camel_case(value);
    match name.strip_prefix(&prefix) {
        Some(rest) if rest.chars().next().is_some_and(char::is_uppercase) => rest.to_owned(),
        _ => name,
    }
}

/// protobuf's JSON name of a field (underscores removed, the letter after
/// each one uppercased); protoc rejects two fields with the same one.
pub fn json_name(field: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Rust keywords (strict and reserved, every edition) that the back end
/// writes as raw identifiers (`r#type`).
const RAW_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where", "while",
    "abstract", "become", "box", "do", "final", "gen", "macro", "override", "priv", "try",
    "typeof", "unsized", "virtual", "yield",
];

/// True when `rust_name` is a keyword the back end must write as `r#name`.
pub fn needs_raw(rust_name: &str) -> bool {
    RAW_KEYWORDS.contains(&rust_name)
}

/// True when `rust_name` cannot be a Rust identifier at all, not even a raw
/// one: `self`, `super`, `crate`, `Self`, `_` and the empty name.
pub fn is_forbidden(rust_name: &str) -> bool {
    matches!(rust_name, "self" | "super" | "crate" | "Self" | "_" | "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_heck_and_prost() {
        assert_eq!(snake_case("serverReceiveNs"), "server_receive_ns");
        assert_eq!(snake_case("foo_bar"), "foo_bar");
        assert_eq!(snake_case("fooBar"), "foo_bar");
        assert_eq!(snake_case("GetTime"), "get_time");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("a1B"), "a1_b");
        assert_eq!(snake_case("__x__"), "x");
        assert_eq!(snake_case("_"), "");
        assert_eq!(upper_camel_case("time_reading"), "TimeReading");
        assert_eq!(upper_camel_case("MODE_UNSPECIFIED"), "ModeUnspecified");
        assert_eq!(upper_camel_case("HTTPServer"), "HttpServer");
        assert_eq!(enum_value("Mode", "MODE_UNSPECIFIED"), "Unspecified");
        assert_eq!(enum_value("Mode", "SLEW"), "Slew");
        assert_eq!(enum_value("Mode", "MODE"), "Mode");
        assert_eq!(enum_value("Mode", "MODERN"), "Modern");
        assert_eq!(
            enum_value("MessageType", "MESSAGE_TYPE_UNSPECIFIED"),
            "Unspecified"
        );
        assert_eq!(json_name("foo_bar"), "fooBar");
        assert_eq!(json_name("a_1"), "a1");
    }

    #[test]
    fn keywords() {
        assert!(needs_raw("type"));
        assert!(!needs_raw("kind"));
        assert!(
            is_forbidden("self")
                && is_forbidden("Self")
                && is_forbidden("crate")
                && is_forbidden("super")
        );
        assert!(!is_forbidden("type"));
    }
}
