//! Names: IDL names to Rust identifiers, exactly as `prost-build` does it.
//!
//! The case conversions are the front end's ([`crate::resolve::names`]), so
//! that the names it checks for collisions are the names generated here:
//! heck's word splitting, `r#` for keywords, and (only for input the front
//! end would have refused) a `_` suffix where a raw identifier is not
//! allowed.

use crate::resolve::names::{is_forbidden, needs_raw, words};
use proc_macro2::{Ident, Span};
use quote::format_ident;

/// `UpperCamelCase` (heck's `to_upper_camel_case`).
pub(crate) fn upper_camel(s: &str) -> String {
    crate::resolve::names::upper_camel_case(s)
}

/// `snake_case` (heck's `to_snake_case`).
pub(crate) fn snake(s: &str) -> String {
    crate::resolve::names::snake_case(s)
}

/// `SHOUTY_SNAKE_CASE` (heck's `to_shouty_snake_case`).
pub(crate) fn shouty(s: &str) -> String {
    words(s)
        .iter()
        .map(|w| w.to_uppercase())
        .collect::<Vec<_>>()
        .join("_")
}

/// An identifier for `name` (already case-converted): raw for keywords,
/// suffixed with `_` where a raw identifier is not allowed, and never
/// empty (an empty name, impossible from the front end, becomes `_empty`).
pub(crate) fn ident(name: &str) -> Ident {
    // The front end only accepts ASCII identifiers; keep this total for
    // any input anyway (`Ident::new` panics on an invalid identifier).
    let cleaned: String;
    let name = if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        name
    } else {
        cleaned = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        &cleaned
    };
    if name.is_empty() {
        return Ident::new("_empty", Span::call_site());
    }
    if is_forbidden(name) {
        return Ident::new(&format!("{name}_"), Span::call_site());
    }
    if needs_raw(name) {
        return Ident::new_raw(name, Span::call_site());
    }
    // Names starting with a digit are not identifiers (the front end does
    // not produce them; keep the generator total anyway).
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Ident::new(&format!("_{name}"), Span::call_site());
    }
    Ident::new(name, Span::call_site())
}

/// The Rust type name of a message, enum, oneof or service (`UpperCamelCase`).
pub(crate) fn type_ident(name: &str) -> Ident {
    ident(&upper_camel(name))
}

/// The Rust name of a field, method or module (`snake_case`).
pub(crate) fn snake_ident(name: &str) -> Ident {
    ident(&snake(name))
}

/// The Rust type name of a service or message without the `r#` a keyword
/// gets, for the names made from it (`ClockServer`, `ClockGrpc`) and for
/// docs.
pub(crate) fn bare_type_name(name: &str) -> String {
    type_ident(name)
        .to_string()
        .trim_start_matches("r#")
        .to_owned()
}

/// Name of the `MethodInfo` const of the method `method` in its service
/// module: its name in `SHOUTY_CASE`, with a `_` suffix if that would be
/// `SERVICE`. The service items name it, and so does the gRPC face.
pub(crate) fn method_const(method: &str) -> Ident {
    let name = shouty(method);
    if name == "SERVICE" {
        format_ident!("SERVICE_")
    } else {
        ident(&name)
    }
}

/// The Rust name of an enum variant: the value name in `UpperCamelCase`
/// with the enum's name stripped from its front when what remains starts
/// with an upper-case letter (`MODE_UNSPECIFIED` of `Mode` -> `Unspecified`,
/// `MODE1` stays `Mode1`), exactly as prost-build.
pub(crate) fn variant_name(enum_name: &str, value_name: &str) -> String {
    crate::resolve::names::enum_value(enum_name, value_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_conversion_matches_heck() {
        assert_eq!(upper_camel("MODE_UNSPECIFIED"), "ModeUnspecified");
        assert_eq!(upper_camel("time_reading"), "TimeReading");
        assert_eq!(upper_camel("HTTPRequest"), "HttpRequest");
        assert_eq!(upper_camel("v1"), "V1");
        assert_eq!(snake("TimeReading"), "time_reading");
        assert_eq!(snake("GetTime"), "get_time");
        assert_eq!(snake("HTTPRequest"), "http_request");
        assert_eq!(snake("get2Things"), "get2_things");
        assert_eq!(snake("server_receive_ns"), "server_receive_ns");
        assert_eq!(shouty("GetTime"), "GET_TIME");
        assert_eq!(shouty("Adjust"), "ADJUST");
    }

    #[test]
    fn keywords_become_raw_or_suffixed() {
        assert_eq!(snake_ident("type").to_string(), "r#type");
        assert_eq!(snake_ident("self").to_string(), "self_");
        assert_eq!(type_ident("Self").to_string(), "Self_");
        assert_eq!(snake_ident("Match").to_string(), "r#match");
        assert_eq!(snake_ident("plain").to_string(), "plain");
    }

    #[test]
    fn any_name_gives_a_valid_identifier() {
        for name in [
            "", "_", "1abc", "é", "a-b", "self", "Self", "x²", "__", "a b", "crate",
        ] {
            for f in [snake_ident, type_ident, |s: &str| ident(&shouty(s))] {
                let id = f(name).to_string();
                assert!(
                    syn::parse_str::<syn::Ident>(&id).is_ok() || id.starts_with("r#"),
                    "{name:?} -> {id:?}"
                );
            }
        }
    }

    #[test]
    fn enum_prefixes_are_stripped_like_prost_build() {
        assert_eq!(variant_name("Mode", "MODE_UNSPECIFIED"), "Unspecified");
        assert_eq!(variant_name("Mode", "SLEW"), "Slew");
        assert_eq!(
            variant_name("MessageType", "MESSAGE_TYPE_UNSPECIFIED"),
            "Unspecified"
        );
        assert_eq!(variant_name("MessageType", "REQUEST"), "Request");
        assert_eq!(variant_name("ExchangeProtocol", "PROTOCOL_R"), "ProtocolR");
        assert_eq!(variant_name("Mode", "MODE1"), "Mode1");
        assert_eq!(variant_name("Foo", "FOOBAR"), "Foobar");
    }
}
