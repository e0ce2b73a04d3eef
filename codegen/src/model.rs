//! The resolved model of a set of `.idl` files: what the back ends (Rust and
//! `.proto`) consume.
//!
//! The front end (lexer -> parser -> AST -> resolution and validation)
//! produces a [`Model`] only when the input had no errors, so every name in
//! here is resolved and every rule of the language already holds: back ends
//! never report errors of their own.

use std::path::PathBuf;

/// Everything compiled from one root `.idl` file and the files it imports.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// One entry per file, the root files first, then imports in the order
    /// they were first reached. Every file appears once.
    pub files: Vec<File>,
}

/// One `.idl` file.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    /// Path as given by the caller (roots) or resolved relative to the
    /// importing file (imports).
    pub path: PathBuf,
    /// `package a.b.c;` split on dots; empty when the file declares none.
    pub package: Vec<String>,
    /// `///` comment lines before the `package` line (file docs).
    pub docs: Vec<String>,
    /// Paths of the files this one imports, as resolved.
    pub imports: Vec<PathBuf>,
    /// Messages in declaration order.
    pub messages: Vec<Message>,
    /// Enums in declaration order.
    pub enums: Vec<Enum>,
    /// Services in declaration order.
    pub services: Vec<Service>,
    /// True when this file was reached only through an import (its Rust
    /// items are still generated, in the same output, so that a crate
    /// gets every type it uses from one `include`).
    pub imported: bool,
}

impl File {
    /// The dotted package, e.g. `demo.v1`.
    pub fn package_name(&self) -> String {
        self.package.join(".")
    }
}

/// A fully qualified reference to a message or enum: `package` plus `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeRef {
    /// Package of the file that declares the type (may be empty).
    pub package: Vec<String>,
    /// The type's name as declared (UpperCamelCase by convention).
    pub name: String,
}

impl TypeRef {
    /// `demo.v1.TimeReading`, or `TimeReading` without a package.
    pub fn full_name(&self) -> String {
        if self.package.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.package.join("."), self.name)
        }
    }
}

/// A message (maps 1:1 onto a proto3 message).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Name as declared.
    pub name: String,
    /// `///` doc lines, without the `///` and one leading space.
    pub docs: Vec<String>,
    /// Plain, optional, repeated and map fields, in declaration order.
    pub fields: Vec<Field>,
    /// `oneof` groups, in declaration order.
    pub oneofs: Vec<Oneof>,
    /// Reserved tag ranges, inclusive on both ends (`9` is `9..=9`).
    pub reserved_ranges: Vec<(u32, u32)>,
    /// Reserved field names.
    pub reserved_names: Vec<String>,
}

/// A field outside any `oneof`.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Name as declared (snake_case by convention).
    pub name: String,
    /// Doc lines.
    pub docs: Vec<String>,
    /// Field number (1..=536870911, never 19000..=19999).
    pub tag: u32,
    /// Type and cardinality.
    pub kind: FieldKind,
}

/// Type and cardinality of a field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    /// `T name = n;` (proto3 implicit presence; messages are optional in
    /// Rust as in prost).
    Single(Type),
    /// `optional T name = n;` (explicit presence).
    Optional(Type),
    /// `repeated T name = n;` (scalars numeric types are packed, as proto3).
    Repeated(Type),
    /// `map<K, V> name = n;` K is an integral, bool or string scalar.
    Map(Scalar, Type),
}

/// A `oneof` group.
#[derive(Debug, Clone, PartialEq)]
pub struct Oneof {
    /// Name as declared.
    pub name: String,
    /// Doc lines.
    pub docs: Vec<String>,
    /// Its variants (each a plain, single field; never repeated or map).
    pub fields: Vec<OneofField>,
}

/// One variant of a `oneof`.
#[derive(Debug, Clone, PartialEq)]
pub struct OneofField {
    /// Name as declared.
    pub name: String,
    /// Doc lines.
    pub docs: Vec<String>,
    /// Field number.
    pub tag: u32,
    /// Its type.
    pub ty: Type,
}

/// A field's element type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Type {
    /// One of the proto3 scalars.
    Scalar(Scalar),
    /// A message, by full name.
    Message(TypeRef),
    /// An enum, by full name.
    Enum(TypeRef),
}

/// The proto3 scalar types, spelled as in the IDL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// `double` (f64).
    Double,
    /// `float` (f32).
    Float,
    /// `int32`.
    Int32,
    /// `int64`.
    Int64,
    /// `uint32`.
    Uint32,
    /// `uint64`.
    Uint64,
    /// `sint32` (zig-zag).
    Sint32,
    /// `sint64` (zig-zag).
    Sint64,
    /// `fixed32`.
    Fixed32,
    /// `fixed64`.
    Fixed64,
    /// `sfixed32`.
    Sfixed32,
    /// `sfixed64`.
    Sfixed64,
    /// `bool`.
    Bool,
    /// `string` (UTF-8).
    String,
    /// `bytes`.
    Bytes,
}

impl Scalar {
    /// Every scalar, in the order above.
    pub const ALL: [Scalar; 15] = [
        Scalar::Double,
        Scalar::Float,
        Scalar::Int32,
        Scalar::Int64,
        Scalar::Uint32,
        Scalar::Uint64,
        Scalar::Sint32,
        Scalar::Sint64,
        Scalar::Fixed32,
        Scalar::Fixed64,
        Scalar::Sfixed32,
        Scalar::Sfixed64,
        Scalar::Bool,
        Scalar::String,
        Scalar::Bytes,
    ];

    /// The keyword in the IDL and in `.proto` (they are the same).
    pub fn keyword(self) -> &'static str {
        match self {
            Scalar::Double => "double",
            Scalar::Float => "float",
            Scalar::Int32 => "int32",
            Scalar::Int64 => "int64",
            Scalar::Uint32 => "uint32",
            Scalar::Uint64 => "uint64",
            Scalar::Sint32 => "sint32",
            Scalar::Sint64 => "sint64",
            Scalar::Fixed32 => "fixed32",
            Scalar::Fixed64 => "fixed64",
            Scalar::Sfixed32 => "sfixed32",
            Scalar::Sfixed64 => "sfixed64",
            Scalar::Bool => "bool",
            Scalar::String => "string",
            Scalar::Bytes => "bytes",
        }
    }

    /// The scalar named by `word`, if any.
    pub fn from_keyword(word: &str) -> Option<Scalar> {
        Scalar::ALL.into_iter().find(|s| s.keyword() == word)
    }

    /// Whether proto3 allows this scalar as a map key (integral types, bool
    /// and string; not floating point, not bytes).
    pub fn is_valid_map_key(self) -> bool {
        !matches!(self, Scalar::Double | Scalar::Float | Scalar::Bytes)
    }
}

/// An enum (first value is 0, as proto3 requires).
#[derive(Debug, Clone, PartialEq)]
pub struct Enum {
    /// Name as declared.
    pub name: String,
    /// Doc lines.
    pub docs: Vec<String>,
    /// Values in declaration order.
    pub values: Vec<EnumValue>,
}

/// One enum value.
#[derive(Debug, Clone, PartialEq)]
pub struct EnumValue {
    /// Name as declared (SCREAMING_SNAKE_CASE by convention).
    pub name: String,
    /// Doc lines.
    pub docs: Vec<String>,
    /// Its number.
    pub number: i32,
}

/// A service.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Name as declared (UpperCamelCase).
    pub name: String,
    /// Doc lines.
    pub docs: Vec<String>,
    /// Methods in declaration order.
    pub methods: Vec<Method>,
}

// `Protocol` and `Style` have twins in `rpc_core::service`, variant for
// variant, and stay two definitions on purpose: this crate cannot use
// rpc-core's, since rpc-core depends on it (rpc-core -> rpc-macros ->
// rpc-codegen) and brings tokio with it, which the code generator must
// not (it runs in build scripts and proc macros). The model's are what the
// IDL says; rpc-core's are what a call does at run time. Generated code
// maps one to the other by name (`rust/service.rs`: `protocol_tokens`,
// `style_tokens`), so a variant missing on the rpc-core side fails to
// compile in the generated-code tests.

/// The exchange protocol of a call (see `idl/PROTOCOL.md`, section 5,
/// "Exchange protocols: R, RR, RRA").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Request only: no reply, maybe semantics.
    R,
    /// Request, reply.
    RR,
    /// Request, reply, acknowledgement of the reply.
    RRA,
}

/// The default call style of a method (the caller may override it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// The caller waits for the result.
    Sync,
    /// The caller continues at the server's ACCEPT; the result is dropped.
    Async,
    /// The caller gets a handle at the ACCEPT and collects the result later.
    Deferred,
    /// No reply at all (only for `oneway` methods).
    OneWay,
}

/// A method with its attributes resolved to their effective values.
#[derive(Debug, Clone, PartialEq)]
pub struct Method {
    /// Name as declared (UpperCamelCase).
    pub name: String,
    /// Doc lines.
    pub docs: Vec<String>,
    /// Stable id: FNV-1a 32 of `<package>.<Service>/<Method>` (see
    /// [`method_id`]); unchanged when methods are added or reordered.
    pub id: u32,
    /// Request type.
    pub request: TypeRef,
    /// Reply type; `None` for `oneway` methods.
    pub response: Option<TypeRef>,
    /// The typed application error of `raises (E)`.
    pub raises: Option<TypeRef>,
    /// `oneway rpc`.
    pub oneway: bool,
    /// `[idempotent]`.
    pub idempotent: bool,
    /// Effective protocol: as declared, else R for oneway, else RR.
    pub protocol: Protocol,
    /// `[timeout = ..]` in milliseconds, if declared.
    pub timeout_ms: Option<u64>,
    /// `[retries = n]`, if declared: attempts after the first.
    pub retries: Option<u32>,
    /// Effective default style: as declared, else OneWay for oneway, else Sync.
    pub style: Style,
}

/// The stable method id: 32-bit FNV-1a over the UTF-8 bytes of
/// `<package>.<Service>/<Method>` (`<Service>/<Method>` without a package).
///
/// Zero is never returned (it is remapped to 1), so that 0 can mean "none"
/// on the wire.
pub fn method_id(package: &str, service: &str, method: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    if !package.is_empty() {
        feed(package.as_bytes());
        feed(b".");
    }
    feed(service.as_bytes());
    feed(b"/");
    feed(method.as_bytes());
    if hash == 0 {
        1
    } else {
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_id_is_fnv1a_of_the_full_path() {
        // FNV-1a 32 of "a" is 0xe40c292c; check the algorithm on a path.
        assert_ne!(method_id("", "", "a"), 0);
        let id = method_id("demo.v1", "Clock", "GetTime");
        assert_eq!(id, method_id("demo.v1", "Clock", "GetTime"));
        assert_ne!(id, method_id("demo.v1", "Clock", "Adjust"));
        assert_ne!(id, method_id("demo.v2", "Clock", "GetTime"));
    }
}
