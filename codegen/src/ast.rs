//! The syntax tree of one `.idl` file, with spans, as written (nothing
//! resolved or checked yet beyond the grammar).
//!
//! Produced by [`parser::parse`](crate::parser::parse), consumed by
//! [`resolve`](crate::resolve). After a syntax error the parser skips to the
//! next `;` or `}` and goes on, so a tree may miss the broken pieces.

pub use crate::lexer::IntLit;
pub use crate::span::Span;

/// A name and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where.
    pub span: Span,
}

/// A possibly dotted name, e.g. `demo.v1.Mode` or `Mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The parts, at least one.
    pub parts: Vec<Ident>,
    /// From the first to the last part.
    pub span: Span,
}

impl Path {
    /// The parts joined with dots.
    pub fn dotted(&self) -> String {
        self.parts
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// One file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct File {
    /// `///` lines before `package`.
    pub docs: Vec<String>,
    /// `package a.b;`, the first one if several were written.
    pub package: Option<Path>,
    /// `import "x.idl";` in order.
    pub imports: Vec<Import>,
    /// Messages, enums and services in order.
    pub items: Vec<Item>,
}

/// `import "path";`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The path as written (escapes decoded).
    pub path: String,
    /// The string literal.
    pub span: Span,
}

/// A top-level declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `message`.
    Message(Message),
    /// `enum`.
    Enum(Enum),
    /// `service`.
    Service(Service),
}

impl Item {
    /// The declared name.
    pub fn name(&self) -> &Ident {
        match self {
            Item::Message(m) => &m.name,
            Item::Enum(e) => &e.name,
            Item::Service(s) => &s.name,
        }
    }
}

/// `message Name { ... }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Doc lines.
    pub docs: Vec<String>,
    /// Its name.
    pub name: Ident,
    /// Fields, oneofs and `reserved` statements in order.
    pub members: Vec<Member>,
}

/// Something inside a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// A field.
    Field(Field),
    /// `oneof name { ... }`.
    Oneof(Oneof),
    /// `reserved ...;`.
    Reserved(Reserved),
}

/// Cardinality written before a field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Nothing written.
    None,
    /// `optional` (span of the keyword).
    Optional(Span),
    /// `repeated` (span of the keyword).
    Repeated(Span),
}

/// A field's type as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// A scalar keyword or a (dotted) message or enum name.
    Named(Path),
    /// `map<K, V>`.
    Map {
        /// Key type.
        key: Path,
        /// Value type.
        value: Path,
        /// From `map` to `>`.
        span: Span,
    },
}

impl FieldType {
    /// Where the type is written.
    pub fn span(&self) -> Span {
        match self {
            FieldType::Named(p) => p.span,
            FieldType::Map { span, .. } => *span,
        }
    }
}

/// `[label] type name = number;`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Doc lines.
    pub docs: Vec<String>,
    /// `optional`, `repeated` or nothing.
    pub label: Label,
    /// The type.
    pub ty: FieldType,
    /// The name.
    pub name: Ident,
    /// The field number as written.
    pub number: IntLit,
    /// Where the number is.
    pub number_span: Span,
}

/// `oneof name { fields }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oneof {
    /// Doc lines.
    pub docs: Vec<String>,
    /// The name.
    pub name: Ident,
    /// Its fields (labels and maps are parsed, then rejected by resolution).
    pub fields: Vec<Field>,
}

/// `reserved 1, 2 to 5, max;` or `reserved "a", "b";`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The ranges and names, in order.
    pub items: Vec<ReservedItem>,
}

/// One entry of a `reserved` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservedItem {
    /// `n` or `n to m` or `n to max` (`max` is 536870911).
    Range {
        /// Low end as written.
        start: IntLit,
        /// High end as written (`None`: `max`), equal to `start` for a single number.
        end: Option<IntLit>,
        /// From the first number to the last token.
        span: Span,
    },
    /// `"name"`.
    Name {
        /// The name.
        name: String,
        /// The string literal.
        span: Span,
    },
}

/// `enum Name { VALUE = n; ... }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enum {
    /// Doc lines.
    pub docs: Vec<String>,
    /// The name.
    pub name: Ident,
    /// Values in order.
    pub values: Vec<EnumValue>,
    /// Where the closing `}` is (for "an enum needs a value" errors).
    pub close: Span,
}

/// `NAME = n;`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumValue {
    /// Doc lines.
    pub docs: Vec<String>,
    /// The name.
    pub name: Ident,
    /// The number as written.
    pub number: IntLit,
    /// Where the number is.
    pub number_span: Span,
}

/// `service Name { methods }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Doc lines.
    pub docs: Vec<String>,
    /// The name.
    pub name: Ident,
    /// Methods in order.
    pub methods: Vec<Method>,
}

/// `[oneway] rpc Name(Req) [returns (Resp)] [raises (Err)] [attrs];`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// Doc lines.
    pub docs: Vec<String>,
    /// The `oneway` keyword, if written.
    pub oneway: Option<Span>,
    /// The name.
    pub name: Ident,
    /// Request type.
    pub request: Path,
    /// Reply type (`returns`), if written.
    pub response: Option<Path>,
    /// Error type (`raises`), if written.
    pub raises: Option<Path>,
    /// Attributes in order.
    pub attributes: Vec<Attribute>,
}

/// `name` or `name = value` inside `[...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute's name.
    pub name: Ident,
    /// Its value, if written.
    pub value: Option<AttrValue>,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// A word, e.g. `RRA` or `deferred`.
    Ident(Ident),
    /// A number, possibly with a unit (`250ms`).
    Int(IntLit, Span),
    /// A string literal.
    Str(String, Span),
}

impl AttrValue {
    /// Where the value is.
    pub fn span(&self) -> Span {
        match self {
            AttrValue::Ident(i) => i.span,
            AttrValue::Int(_, s) | AttrValue::Str(_, s) => *s,
        }
    }
}
