//! Items: the file's statements (`package`, `import`, `message`, `enum`,
//! `service`), the members of messages and oneofs, reserved numbers and
//! names, enum values and methods.
//!
//! Syntax errors from here: unsupported statements (`option`, `syntax`,
//! `extend`, `edition`, nested declarations, streaming), a misplaced or
//! repeated `package`, a stray `}`, a oneof inside a oneof or `reserved`
//! in one, `reserved` or `option` in an enum, malformed `reserved` lists
//! and enum values, and methods: `returns` missing or given to a `oneway`
//! method, `raises` on a `oneway` method, a missing `;`.

use super::cursor::{PResult, Parser};
use crate::ast::{self, Member, ReservedItem};
use crate::lexer::TokenKind;

/// The clauses that follow a method's request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clause {
    /// `returns (Reply)`.
    Returns,
    /// `raises (Error)`.
    Raises,
}

impl Parser<'_> {
    /// The whole file, up to `Eof`.
    pub(super) fn file(&mut self) -> ast::File {
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
                        "option" | "syntax" | "extend" | "edition" => Err(self.reject(
                            format!("`{w}` statements are not supported"),
                            "the IDL has no such statement",
                        )),
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

    fn nested_declaration(&mut self, inside: &str) -> PResult<Option<Member>> {
        let name = match self.kind_at(1) {
            TokenKind::Ident(n) => format!(" `{n}`"),
            _ => String::new(),
        };
        Err(self.reject(
            format!("nested declarations are not supported in {inside}"),
            format!("declare{name} at the top level of the file"),
        ))
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
                    return Err(p.reject(
                        "a oneof cannot contain another oneof",
                        "not allowed inside a oneof",
                    ));
                }
                if p.is_word("reserved") && !matches!(p.kind_at(1), TokenKind::Eq) {
                    return Err(p.reject(
                        "`reserved` belongs in the message, not in a oneof",
                        "move it out of the oneof",
                    ));
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
            return Err(self.reject(
                "`option` statements are not supported",
                "the IDL has no options",
            ));
        }
        self.field(docs).map(|f| Some(Member::Field(f)))
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
                let w = if p.is_word("reserved") {
                    "reserved"
                } else {
                    "option"
                };
                return Err(p.reject(
                    format!("`{w}` is not supported in enums"),
                    "an enum holds only `NAME = number;` values",
                ));
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
            response = self.clause(Clause::Returns, oneway.is_some())?;
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
            raises = self.clause(Clause::Raises, oneway.is_some())?;
        }
        let attributes = self.attributes()?;
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

    /// A method's `returns (Reply)` or `raises (Error)` clause, at its
    /// keyword: the type named, or `None` with an error for a `oneway`
    /// method, which has no reply to carry it. Only a reply can be written
    /// as a stream (which is refused).
    fn clause(&mut self, clause: Clause, oneway: bool) -> PResult<Option<ast::Path>> {
        let (keyword, what, refusal, label) = match clause {
            Clause::Returns => (
                "returns",
                "reply",
                "a `oneway` method has no reply",
                "remove `returns (..)`, or remove `oneway`",
            ),
            Clause::Raises => (
                "raises",
                "error",
                "a `oneway` method cannot raise an error",
                "there is no reply to carry it: remove `raises (..)`",
            ),
        };
        let start = self.bump().span;
        self.expect(&TokenKind::LParen, &format!("after `{keyword}`"))?;
        if clause == Clause::Returns {
            self.no_stream()?;
        }
        let ty = self.path(&format!("the {what} type"), &format!("in `{keyword} (..)`"))?;
        let end = self.expect(&TokenKind::RParen, &format!("after the {what} type"))?;
        if oneway {
            self.error(start.to(end), refusal, label);
            return Ok(None);
        }
        Ok(Some(ty))
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
