//! Tokens to an [`ast::File`], recovering from syntax errors.
//!
//! A recursive-descent parser over the grammar of `idl/README.md`. When a
//! statement is malformed the parser reports what it expected, skips to the
//! next `;` (or to the `}` closing the current block, or over a whole `{..}`
//! block) and goes on, so that every mistake in a file is reported and the
//! tree keeps every well-formed declaration.
//!
//! # Where each part is parsed
//! - `items`: the file's statements, messages and their members, enums,
//!   services and methods;
//! - `types`: fields and type names (`map<K, V>` included);
//! - `attributes`: a method's `[..]` list;
//! - `recovery`: going on after a syntax error (a missing `;`, skipping a
//!   broken statement or block member);
//! - `cursor`: the parser's state, its reading of tokens and the "expected
//!   .., found .." error, which all of the above build on.
//!
//! Each module says which syntax errors it reports. Lexical errors come
//! from the [`lexer`]; rules that are not about syntax
//! (unknown types, duplicate names, ..) are checked by
//! [`resolve`](crate::resolve).

mod attributes;
mod cursor;
mod items;
mod recovery;
mod types;

#[cfg(test)]
mod tests;

use crate::ast;
use crate::diag;
use crate::lexer;
use cursor::Parser;

/// Parses `src`: the tree (as complete as recovery allows) and every
/// lexical and syntax error, in source order.
pub fn parse(src: &str) -> (ast::File, Vec<diag::Error>) {
    let (tokens, mut errors) = lexer::lex(src);
    let mut p = Parser::new(src, tokens);
    let file = p.file();
    errors.append(&mut p.errors);
    errors.sort_by_key(|e| e.span.start);
    (file, errors)
}
