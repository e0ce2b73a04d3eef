//! Tokens to an [`ast::File`], recovering from syntax errors.
//!
//! A recursive-descent parser over the grammar of `idl/README.md`. When a
//! statement is malformed the parser reports what it expected, skips to the
//! next `;` (or to the `}` closing the current block, or over a whole `{..}`
//! block) and goes on, so that every mistake in a file is reported and the
//! tree keeps every well-formed declaration.

use crate::ast::{self, AttrValue, Attribute, FieldType, Ident, Label, Member, ReservedItem};
use crate::diag;
use crate::lexer::{self, IntLit, Token, TokenKind};
use crate::span::Span;

/// Parses `src`: the tree (as complete as recovery allows) and every
/// lexical and syntax error, in source order.
pub fn parse(src: &str) -> (ast::File, Vec<diag::Error>) {
    let (tokens, mut errors) = lexer::lex(src);
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
        errors: Vec::new(),
    };
    let file = p.file();
    errors.append(&mut p.errors);
    errors.sort_by_key(|e| e.span.start);
    (file, errors)
}

/// The syntax error was reported; the caller recovers.
struct Reported;

type PResult<T> = Result<T, Reported>;

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    errors: Vec<diag::Error>,
}

const EOF_TOKEN: Token = Token {
    kind: TokenKind::Eof,
    span: Span { start: 0, end: 0 },
};

impl Parser<'_> {
    // ---- token helpers ----

    fn tok(&self) -> &Token {
        self.tokens
            .get(self.pos)
            .or(self.tokens.last())
            .unwrap_or(&EOF_TOKEN)
    }

    fn kind(&self) -> &TokenKind {
        &self.tok().kind
    }

    fn kind_at(&self, ahead: usize) -> &TokenKind {
        self.tokens
            .get(self.pos + ahead)
            .map_or(&TokenKind::Eof, |t| &t.kind)
    }

    fn bump(&mut self) -> Token {
        let t = self.tok().clone();
        if self.pos < self.tokens.len().saturating_sub(1) {
            self.pos += 1;
        }
        t
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.kind(), TokenKind::Ident(w) if w == word)
    }

    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.tokens.get(self.pos - 1).map_or(0, |t| t.span.end)
        }
    }

    /// Reports "expected {what} {context}, found {token}". When the found
    /// token is on a later line than the previous one, the error points just
    /// after the previous token (where the missing thing belongs).
    fn expected(&mut self, what: &str, context: &str) -> Reported {
        let found = self.tok().clone();
        let prev_end = self.prev_end();
        let gap = self.src.get(prev_end..found.span.start).unwrap_or("");
        let sep = if context.is_empty() { "" } else { " " };
        let message = format!(
            "expected {what}{sep}{context}, found {}",
            found.kind.describe()
        );
        let (span, label) = if self.pos > 0 && gap.contains('\n') {
            (
                Span::new(prev_end, prev_end),
                format!("expected {what} here"),
            )
        } else {
            (found.span, format!("expected {what}"))
        };
        self.errors.push(diag::Error::new(span, message, label));
        Reported
    }

    fn error(&mut self, span: Span, message: impl Into<String>, label: impl Into<String>) {
        self.errors.push(diag::Error::new(span, message, label));
    }

    fn expect(&mut self, kind: &TokenKind, context: &str) -> PResult<Span> {
        if self.kind() == kind {
            return Ok(self.bump().span);
        }
        let what = kind.describe();
        // A `;` missing at the end of a line: report it and go on as if it
        // were there, so that the next line is still parsed and checked.
        let prev_end = self.prev_end();
        let next_line = self
            .src
            .get(prev_end..self.tok().span.start)
            .is_some_and(|gap| gap.contains('\n'));
        if *kind == TokenKind::Semi && self.pos > 0 && next_line {
            let _ = self.expected(&what, context);
            return Ok(Span::new(prev_end, prev_end));
        }
        Err(self.expected(&what, context))
    }

    fn expect_word(&mut self, word: &str, context: &str) -> PResult<Span> {
        if self.is_word(word) {
            Ok(self.bump().span)
        } else {
            Err(self.expected(&format!("`{word}`"), context))
        }
    }

    fn ident(&mut self, what: &str, context: &str) -> PResult<Ident> {
        match self.kind().clone() {
            TokenKind::Ident(name) => {
                let span = self.bump().span;
                Ok(Ident { name, span })
            }
            _ => Err(self.expected(what, context)),
        }
    }

    fn path(&mut self, what: &str, context: &str) -> PResult<ast::Path> {
        if matches!(self.kind(), TokenKind::Dot) {
            let span = self.tok().span;
            self.error(
                span,
                "a type name cannot start with `.`",
                "remove the leading `.`: names are resolved from the root already",
            );
            return Err(Reported);
        }
        let first = self.ident(what, context)?;
        let mut span = first.span;
        let mut parts = vec![first];
        while matches!(self.kind(), TokenKind::Dot) {
            self.bump();
            let part = self.ident("a name", "after `.`")?;
            span = span.to(part.span);
            parts.push(part);
        }
        Ok(ast::Path { parts, span })
    }

    /// An integer without a suffix.
    fn number(&mut self, what: &str, context: &str) -> PResult<(IntLit, Span)> {
        match self.kind().clone() {
            TokenKind::Int(lit) => {
                let span = self.bump().span;
                if let Some(suffix) = &lit.suffix {
                    self.error(
                        span,
                        format!("unexpected suffix `{suffix}` on {what}"),
                        "a plain number is expected here",
                    );
                }
                Ok((lit, span))
            }
            _ => Err(self.expected(what, context)),
        }
    }

    fn docs(&mut self) -> Vec<String> {
        let mut docs = Vec::new();
        while let TokenKind::Doc(text) = self.kind() {
            docs.push(text.clone());
            self.bump();
        }
        docs
    }

    /// Skips the rest of a broken statement: up to and including the next
    /// `;`, or up to (not including) a `}` closing the current block, or
    /// over a whole `{ .. }` block.
    fn recover(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.kind() {
                TokenKind::Eof => return,
                TokenKind::Semi if depth == 0 => {
                    self.bump();
                    return;
                }
                TokenKind::LBrace => depth += 1,
                TokenKind::RBrace => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                    if depth == 0 {
                        self.bump();
                        return;
                    }
                }
                _ => {}
            }
            self.bump();
        }
    }

    // ---- grammar ----

    fn file(&mut self) -> ast::File {
        let mut file = ast::File::default();
        let mut seen_anything = false;
        loop {
            let docs = self.docs();
            let start = self.tok().span;
            let result = match self.kind() {
                TokenKind::Eof => break,
                TokenKind::RBrace => {
                    self.error(start, "unexpected `}`", "no block to close here");
                    self.bump();
                    Ok(())
                }
                TokenKind::Ident(w) => {
                    match w.as_str() {
                        "package" => {
                            self.bump();
                            match self.path("a package name", "after `package`") {
                                Ok(path) => {
                                    let semi =
                                        self.expect(&TokenKind::Semi, "after the package name");
                                    if file.package.is_some() {
                                        self.error(
                                            path.span,
                                            "duplicate `package` declaration",
                                            "a file declares one package",
                                        );
                                    } else {
                                        if seen_anything {
                                            self.error(start, "`package` must come before imports and declarations", "move this line up");
                                        }
                                        file.package = Some(path);
                                        file.docs = docs;
                                    }
                                    semi.map(|_| ())
                                }
                                Err(r) => Err(r),
                            }
                        }
                        "import" => {
                            self.bump();
                            match self.kind().clone() {
                                TokenKind::Str(path) => {
                                    let span = self.bump().span;
                                    file.imports.push(ast::Import { path, span });
                                    self.expect(&TokenKind::Semi, "after the import")
                                        .map(|_| ())
                                }
                                _ => Err(self.expected("a string literal", "after `import`")),
                            }
                        }
                        "message" => self
                            .message(docs)
                            .map(|m| file.items.push(ast::Item::Message(m))),
                        "enum" => self
                            .enumeration(docs)
                            .map(|e| file.items.push(ast::Item::Enum(e))),
                        "service" => self
                            .service(docs)
                            .map(|s| file.items.push(ast::Item::Service(s))),
                        "option" | "syntax" | "extend" | "edition" => {
                            self.error(
                                start,
                                format!("`{w}` statements are not supported"),
                                "the IDL has no such statement",
                            );
                            Err(Reported)
                        }
                        _ => Err(self
                            .expected("`message`, `enum`, `service`, `import` or `package`", "")),
                    }
                }
                _ => Err(self.expected("`message`, `enum`, `service`, `import` or `package`", "")),
            };
            if result.is_ok() {
                seen_anything = true;
            }
            if result.is_err() {
                self.recover();
            }
        }
        file
    }

    /// `{`, then members until `}`; `member` is called with the docs.
    fn block<T>(
        &mut self,
        what: &str,
        mut member: impl FnMut(&mut Self, Vec<String>) -> PResult<Option<T>>,
    ) -> PResult<(Vec<T>, Span)> {
        self.expect(&TokenKind::LBrace, &format!("after the name of {what}"))?;
        let mut items = Vec::new();
        loop {
            let docs = self.docs();
            match self.kind() {
                TokenKind::RBrace => {
                    let close = self.bump().span;
                    return Ok((items, close));
                }
                TokenKind::Eof => {
                    let close = self.tok().span;
                    let _ = self.expected("`}`", &format!("to close {what}"));
                    return Ok((items, close));
                }
                _ => {}
            }
            let before = self.pos;
            match member(self, docs) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(Reported) => {
                    self.recover();
                    // Never loop without progress.
                    if self.pos == before
                        && !matches!(self.kind(), TokenKind::RBrace | TokenKind::Eof)
                    {
                        self.bump();
                    }
                }
            }
        }
    }

    fn nested_declaration(&mut self, inside: &str) -> PResult<Option<Member>> {
        let start = self.tok().span;
        let name = match self.kind_at(1) {
            TokenKind::Ident(n) => format!(" `{n}`"),
            _ => String::new(),
        };
        self.error(
            start,
            format!("nested declarations are not supported in {inside}"),
            format!("declare{name} at the top level of the file"),
        );
        Err(Reported)
    }

    fn message(&mut self, docs: Vec<String>) -> PResult<ast::Message> {
        self.bump(); // `message`
        let name = self.ident("a message name", "after `message`")?;
        let what = format!("message `{}`", name.name);
        let (members, _) = self.block(&what, |p, docs| p.member(docs))?;
        Ok(ast::Message {
            docs,
            name,
            members,
        })
    }

    fn member(&mut self, docs: Vec<String>) -> PResult<Option<Member>> {
        if self.is_word("oneof")
            && matches!(self.kind_at(1), TokenKind::Ident(_) | TokenKind::LBrace)
        {
            self.bump();
            let name = self.ident("a oneof name", "after `oneof`")?;
            let what = format!("oneof `{}`", name.name);
            let (fields, _) = self.block(&what, |p, docs| {
                if p.is_word("oneof") && matches!(p.kind_at(1), TokenKind::Ident(_)) {
                    let span = p.tok().span;
                    p.error(
                        span,
                        "a oneof cannot contain another oneof",
                        "not allowed inside a oneof",
                    );
                    return Err(Reported);
                }
                if p.is_word("reserved") && !matches!(p.kind_at(1), TokenKind::Eq) {
                    let span = p.tok().span;
                    p.error(
                        span,
                        "`reserved` belongs in the message, not in a oneof",
                        "move it out of the oneof",
                    );
                    return Err(Reported);
                }
                p.field(docs).map(Some)
            })?;
            return Ok(Some(Member::Oneof(ast::Oneof { docs, name, fields })));
        }
        if self.is_word("reserved") && !matches!(self.kind_at(1), TokenKind::Ident(_)) {
            return self.reserved().map(|r| Some(Member::Reserved(r)));
        }
        if (self.is_word("message") || self.is_word("enum") || self.is_word("service"))
            && matches!(self.kind_at(1), TokenKind::Ident(_))
            && matches!(self.kind_at(2), TokenKind::LBrace)
        {
            return self.nested_declaration("a message");
        }
        let option_statement = matches!(self.kind_at(1), TokenKind::LParen)
            || (matches!(self.kind_at(1), TokenKind::Ident(_))
                && matches!(self.kind_at(2), TokenKind::Eq)
                && !matches!(self.kind_at(3), TokenKind::Int(_)));
        if self.is_word("option") && option_statement {
            let span = self.tok().span;
            self.error(
                span,
                "`option` statements are not supported",
                "the IDL has no options",
            );
            return Err(Reported);
        }
        self.field(docs).map(|f| Some(Member::Field(f)))
    }

    fn field(&mut self, docs: Vec<String>) -> PResult<ast::Field> {
        // `optional`/`repeated` are labels only when a type follows them.
        let label = if self.is_word("optional")
            && matches!(self.kind_at(1), TokenKind::Ident(_))
            && !matches!(self.kind_at(2), TokenKind::Eq)
        {
            Label::Optional(self.bump().span)
        } else if self.is_word("repeated")
            && matches!(self.kind_at(1), TokenKind::Ident(_))
            && !matches!(self.kind_at(2), TokenKind::Eq)
        {
            Label::Repeated(self.bump().span)
        } else {
            Label::None
        };
        let ty = self.field_type()?;
        let name = self.ident("a field name", "after the field's type")?;
        self.expect(&TokenKind::Eq, "after the field name")?;
        let (number, number_span) = self.number("a field number", "after `=`")?;
        self.expect(&TokenKind::Semi, "after field")?;
        Ok(ast::Field {
            docs,
            label,
            ty,
            name,
            number,
            number_span,
        })
    }

    fn field_type(&mut self) -> PResult<FieldType> {
        if self.is_word("map") && matches!(self.kind_at(1), TokenKind::Lt) {
            let start = self.bump().span;
            self.bump(); // `<`
            let key = self.path("a map key type", "after `map<`")?;
            self.expect(&TokenKind::Comma, "after the map key type")?;
            if self.is_word("map") && matches!(self.kind_at(1), TokenKind::Lt) {
                let span = self.tok().span;
                self.error(
                    span,
                    "a map value cannot be a map",
                    "wrap the inner map in a message",
                );
                return Err(Reported);
            }
            let value = self.path("a map value type", "after `,`")?;
            let end = self.expect(&TokenKind::Gt, "to close the map type")?;
            return Ok(FieldType::Map {
                key,
                value,
                span: start.to(end),
            });
        }
        Ok(FieldType::Named(self.path("a type", "for field")?))
    }

    fn reserved(&mut self) -> PResult<ast::Reserved> {
        self.bump(); // `reserved`
        let mut items = Vec::new();
        loop {
            match self.kind().clone() {
                TokenKind::Str(name) => {
                    let span = self.bump().span;
                    items.push(ReservedItem::Name { name, span });
                }
                TokenKind::Int(_) => {
                    let (start, span) = self.number("a field number", "in `reserved`")?;
                    if self.is_word("to") {
                        self.bump();
                        if self.is_word("max") {
                            let end_span = self.bump().span;
                            items.push(ReservedItem::Range {
                                start,
                                end: None,
                                span: span.to(end_span),
                            });
                        } else {
                            let (end, end_span) =
                                self.number("a field number or `max`", "after `to`")?;
                            items.push(ReservedItem::Range {
                                start,
                                end: Some(end),
                                span: span.to(end_span),
                            });
                        }
                    } else {
                        items.push(ReservedItem::Range {
                            end: Some(start.clone()),
                            start,
                            span,
                        });
                    }
                }
                _ => {
                    return Err(
                        self.expected("a field number or a quoted field name", "in `reserved`")
                    )
                }
            }
            match self.kind() {
                TokenKind::Comma => {
                    self.bump();
                }
                TokenKind::Semi => {
                    self.bump();
                    return Ok(ast::Reserved { items });
                }
                _ => return Err(self.expected("`,` or `;`", "in `reserved`")),
            }
        }
    }

    fn enumeration(&mut self, docs: Vec<String>) -> PResult<ast::Enum> {
        self.bump(); // `enum`
        let name = self.ident("an enum name", "after `enum`")?;
        let what = format!("enum `{}`", name.name);
        let (values, close) = self.block(&what, |p, docs| {
            if (p.is_word("reserved") || p.is_word("option"))
                && !matches!(p.kind_at(1), TokenKind::Eq)
            {
                let span = p.tok().span;
                let w = if p.is_word("reserved") {
                    "reserved"
                } else {
                    "option"
                };
                p.error(
                    span,
                    format!("`{w}` is not supported in enums"),
                    "an enum holds only `NAME = number;` values",
                );
                return Err(Reported);
            }
            if (p.is_word("message") || p.is_word("enum"))
                && matches!(p.kind_at(1), TokenKind::Ident(_))
            {
                return p.nested_declaration("an enum").map(|_| None);
            }
            let name = p.ident("an enum value name", "")?;
            p.expect(&TokenKind::Eq, "after the enum value name")?;
            let (number, number_span) = p.number("an enum value number", "after `=`")?;
            p.expect(&TokenKind::Semi, "after enum value")?;
            Ok(Some(ast::EnumValue {
                docs,
                name,
                number,
                number_span,
            }))
        })?;
        Ok(ast::Enum {
            docs,
            name,
            values,
            close,
        })
    }

    fn service(&mut self, docs: Vec<String>) -> PResult<ast::Service> {
        self.bump(); // `service`
        let name = self.ident("a service name", "after `service`")?;
        let what = format!("service `{}`", name.name);
        let (methods, _) = self.block(&what, |p, docs| p.method(docs).map(Some))?;
        Ok(ast::Service {
            docs,
            name,
            methods,
        })
    }

    fn method(&mut self, docs: Vec<String>) -> PResult<ast::Method> {
        let oneway = if self.is_word("oneway") {
            Some(self.bump().span)
        } else {
            None
        };
        if oneway.is_some() {
            self.expect_word("rpc", "after `oneway`")?;
        } else if !self.is_word("rpc") {
            return Err(self.expected("`rpc` or `oneway rpc`", "in a service"));
        } else {
            self.bump();
        }
        let name = self.ident("a method name", "after `rpc`")?;
        self.expect(&TokenKind::LParen, "after the method name")?;
        self.no_stream()?;
        let request = self.path("the request type", "in `(..)`")?;
        self.expect(&TokenKind::RParen, "after the request type")?;

        let mut response = None;
        let mut raises = None;
        if self.is_word("returns") {
            let start = self.bump().span;
            self.expect(&TokenKind::LParen, "after `returns`")?;
            self.no_stream()?;
            let ty = self.path("the reply type", "in `returns (..)`")?;
            let end = self.expect(&TokenKind::RParen, "after the reply type")?;
            if oneway.is_some() {
                self.error(
                    start.to(end),
                    "a `oneway` method has no reply",
                    "remove `returns (..)`, or remove `oneway`",
                );
            } else {
                response = Some(ty);
            }
        } else if oneway.is_none() {
            let found = self.tok().clone();
            if matches!(found.kind, TokenKind::Semi | TokenKind::LBracket) || self.is_word("raises")
            {
                self.error(
                    name.span,
                    format!("method `{}` has no `returns (..)`", name.name),
                    "add `returns (Reply)`, or declare the method `oneway rpc`",
                );
            } else {
                return Err(self.expected("`returns`", "after the request"));
            }
        }
        if self.is_word("raises") {
            let start = self.bump().span;
            self.expect(&TokenKind::LParen, "after `raises`")?;
            let ty = self.path("the error type", "in `raises (..)`")?;
            let end = self.expect(&TokenKind::RParen, "after the error type")?;
            if oneway.is_some() {
                self.error(
                    start.to(end),
                    "a `oneway` method cannot raise an error",
                    "there is no reply to carry it: remove `raises (..)`",
                );
            } else {
                raises = Some(ty);
            }
        }
        let mut attributes = Vec::new();
        if matches!(self.kind(), TokenKind::LBracket) {
            self.bump();
            loop {
                if matches!(self.kind(), TokenKind::RBracket) {
                    self.bump();
                    break;
                }
                let name = self.ident("an attribute name", "in `[..]`")?;
                let value = if matches!(self.kind(), TokenKind::Eq) {
                    self.bump();
                    let value = match self.kind().clone() {
                        TokenKind::Ident(w) => AttrValue::Ident(Ident {
                            name: w,
                            span: self.bump().span,
                        }),
                        TokenKind::Int(lit) => AttrValue::Int(lit, self.bump().span),
                        TokenKind::Str(s) => AttrValue::Str(s, self.bump().span),
                        _ => {
                            return Err(self.expected(
                                "an attribute value",
                                &format!("after `{} =`", name.name),
                            ))
                        }
                    };
                    Some(value)
                } else {
                    None
                };
                attributes.push(Attribute { name, value });
                match self.kind() {
                    TokenKind::Comma => {
                        self.bump();
                    }
                    TokenKind::RBracket => {
                        self.bump();
                        break;
                    }
                    _ => return Err(self.expected("`,` or `]`", "after an attribute")),
                }
            }
        }
        if !matches!(self.kind(), TokenKind::Semi) {
            let what = if attributes.is_empty() {
                "`;` or `[attributes]`"
            } else {
                "`;`"
            };
            return Err(self.expected(what, "after method"));
        }
        self.bump();
        Ok(ast::Method {
            docs,
            oneway,
            name,
            request,
            response,
            raises,
            attributes,
        })
    }

    fn no_stream(&mut self) -> PResult<()> {
        if self.is_word("stream") && matches!(self.kind_at(1), TokenKind::Ident(_)) {
            let span = self.tok().span;
            self.error(
                span,
                "streaming methods are not supported",
                "remove `stream`",
            );
            self.bump();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
