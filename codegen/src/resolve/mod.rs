//! Resolution and validation: parsed files to a [`Model`].
//!
//! [`resolve`] takes every file reached from the roots (already parsed, with
//! their imports already matched to files by the loader), resolves every
//! type name, checks every rule of the language (see `idl/README.md`) and
//! collects every error. It returns a [`Model`] only when there is none.
//!
//! Name visibility: a type is visible in a file if it is declared in that
//! file or in a file it imports directly. It can be named by its simple name
//! when the declaring file has the same package, and always by its full
//! dotted name `pkg.Name`.

pub mod names;

use crate::ast::{self, AttrValue, FieldType, Ident, Label, Member, ReservedItem, Span};
use crate::diag;
use crate::model::{self, Model, Protocol, Scalar, Style, Type, TypeRef};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Highest field number protobuf allows.
pub const MAX_FIELD_NUMBER: u32 = 536_870_911;
/// Field numbers protobuf keeps for itself.
pub const PROTOBUF_RESERVED: std::ops::RangeInclusive<u32> = 19_000..=19_999;
/// Highest `retries` value.
pub const MAX_RETRIES: u32 = 100;
/// The attributes a method can have.
pub const ATTRIBUTES: [&str; 5] = ["idempotent", "protocol", "timeout", "retries", "style"];

/// Rust method names the generated client and group-client stubs define
/// themselves (constructors, accessors, derived `Clone`), so an IDL method
/// may not become one of them.
pub const RESERVED_STUB_METHODS: [&str; 4] = ["new", "client", "group", "clone"];

/// One parsed file, as the loader hands it over.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The file's path (as given, or resolved relative to the importer).
    pub path: PathBuf,
    /// Its text (for line numbers in "first defined at" labels).
    pub source: &'a str,
    /// Its syntax tree.
    pub ast: &'a ast::File,
    /// For each `import` of `ast`, the index in the input list of the file
    /// it names, or `None` when it could not be loaded (already reported).
    pub imports: Vec<Option<usize>>,
    /// True when the file was reached only through imports.
    pub imported: bool,
}

/// Resolves and checks `inputs`: the model when every rule holds, and every
/// error as `(index of the file in inputs, error)`.
pub fn resolve(inputs: &[Input<'_>]) -> (Option<Model>, Vec<(usize, diag::Error)>) {
    let mut r = Resolver {
        inputs,
        errors: Vec::new(),
        decls: BTreeMap::new(),
        by_full: HashMap::new(),
        packages: Vec::new(),
    };
    r.packages = inputs.iter().map(|i| package_of(i.ast)).collect();
    r.check_packages();
    r.declare();
    let files: Vec<model::File> = (0..inputs.len()).map(|i| r.file(i)).collect();
    if r.errors.is_empty() {
        (Some(Model { files }), r.errors)
    } else {
        (None, r.errors)
    }
}

fn package_of(file: &ast::File) -> Vec<String> {
    file.package
        .as_ref()
        .map(|p| p.parts.iter().map(|i| i.name.clone()).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeclKind {
    Message,
    Enum,
    Service,
}

impl DeclKind {
    fn word(self) -> &'static str {
        match self {
            DeclKind::Message => "message",
            DeclKind::Enum => "enum",
            DeclKind::Service => "service",
        }
    }
}

#[derive(Debug, Clone)]
struct Decl {
    file: usize,
    kind: DeclKind,
    span: Span,
}

struct Resolver<'a> {
    inputs: &'a [Input<'a>],
    errors: Vec<(usize, diag::Error)>,
    /// (package, name) -> the first declaration.
    decls: BTreeMap<(Vec<String>, String), Decl>,
    /// Full dotted name -> key of `decls`.
    by_full: HashMap<String, (Vec<String>, String)>,
    packages: Vec<Vec<String>>,
}

/// Edit distance (on chars) counting insertions, deletions, substitutions
/// and swaps of two neighbours (optimal string alignment), for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The closest candidate to `name`, if close enough to be a likely typo.
pub fn suggest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let limit = (name.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = if c.eq_ignore_ascii_case(name) {
            0
        } else {
            distance(name, c)
        };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn did_you_mean(name: &str, candidates: &[String], otherwise: &str) -> String {
    match suggest(name, candidates.iter().map(String::as_str)) {
        Some(s) => format!("did you mean `{s}`?"),
        None => otherwise.to_owned(),
    }
}

fn plain_u32(lit: &ast::IntLit) -> Option<u32> {
    if lit.negative {
        return None;
    }
    lit.magnitude.and_then(|m| u32::try_from(m).ok())
}

/// A field's name, number and where they are, for the per-message checks.
struct FieldSite<'f> {
    field: &'f ast::Field,
}

impl<'a> Resolver<'a> {
    fn err(
        &mut self,
        file: usize,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) {
        self.errors
            .push((file, diag::Error::new(span, message, label)));
    }

    /// "line 3" in the same file, "`common.idl`:3:5" in another.
    fn place(&self, from: usize, file: usize, span: Span) -> String {
        let src = self.inputs[file].source;
        let at = span.start.min(src.len());
        let before = src.get(..at).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        if from == file {
            format!("line {line}")
        } else {
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{}:{line}:{col}", self.inputs[file].path.display())
        }
    }

    fn check_packages(&mut self) {
        for (i, input) in self.inputs.iter().enumerate() {
            let Some(pkg) = &input.ast.package else {
                continue;
            };
            for part in &pkg.parts {
                let rust = names::snake_case(&part.name);
                if names::is_forbidden(&rust) || rust != part.name {
                    let why = if names::is_forbidden(&rust) {
                        format!("`{}` cannot be a Rust module name", part.name)
                    } else {
                        format!("would become the Rust module `{rust}`: write package parts in snake_case")
                    };
                    self.err(
                        i,
                        part.span,
                        format!("invalid package name part `{}`", part.name),
                        why,
                    );
                }
            }
        }
    }

    /// Declares every message, enum and service; reports duplicates (also
    /// after case conversion) and enum values colliding in the package scope.
    fn declare(&mut self) {
        let mut camel: HashMap<(Vec<String>, String), (usize, String, Span)> = HashMap::new();
        // protobuf scopes enum values next to their enum, i.e. in the package.
        let mut values: HashMap<(Vec<String>, String), (usize, String, Span)> = HashMap::new();
        for (fi, input) in self.inputs.iter().enumerate() {
            let pkg = self.packages[fi].clone();
            for item in &input.ast.items {
                let (kind, name) = match item {
                    ast::Item::Message(m) => (DeclKind::Message, &m.name),
                    ast::Item::Enum(e) => (DeclKind::Enum, &e.name),
                    ast::Item::Service(s) => (DeclKind::Service, &s.name),
                };
                let key = (pkg.clone(), name.name.clone());
                if let Some(first) = self.decls.get(&key) {
                    let msg = format!(
                        "`{}` is defined more than once in {}",
                        name.name,
                        pkg_words(&pkg)
                    );
                    let label = format!(
                        "{} `{}` first defined at {}",
                        first.kind.word(),
                        name.name,
                        self.place(fi, first.file, first.span)
                    );
                    self.err(fi, name.span, msg, label);
                    continue;
                }
                let rust = names::upper_camel_case(&name.name);
                if names::is_forbidden(&rust) {
                    self.err(
                        fi,
                        name.span,
                        format!("`{}` cannot be used as a name", name.name),
                        format!("it becomes `{rust}` in Rust, which is reserved"),
                    );
                } else if let Some((ff, other, span)) = camel.get(&(pkg.clone(), rust.clone())) {
                    let label = format!(
                        "`{other}` (at {}) also becomes `{rust}`",
                        self.place(fi, *ff, *span)
                    );
                    self.err(fi, name.span, format!("`{}` collides with `{other}` after conversion to Rust's UpperCamelCase", name.name), label);
                } else {
                    camel.insert((pkg.clone(), rust), (fi, name.name.clone(), name.span));
                }
                self.by_full.insert(full_name(&key.0, &key.1), key.clone());
                self.decls.insert(
                    key,
                    Decl {
                        file: fi,
                        kind,
                        span: name.span,
                    },
                );
            }
        }
        self.check_generated_names(&camel);
        for (fi, input) in self.inputs.iter().enumerate() {
            let pkg = self.packages[fi].clone();
            for item in &input.ast.items {
                let ast::Item::Enum(e) = item else { continue };
                let mut seen_here: HashMap<&str, Span> = HashMap::new();
                for v in &e.values {
                    if let Some(first) = seen_here.get(v.name.name.as_str()) {
                        let label = format!("first defined at {}", self.place(fi, fi, *first));
                        self.err(
                            fi,
                            v.name.span,
                            format!(
                                "duplicate enum value `{}` in enum `{}`",
                                v.name.name, e.name.name
                            ),
                            label,
                        );
                        continue;
                    }
                    seen_here.insert(&v.name.name, v.name.span);
                    let key = (pkg.clone(), v.name.name.clone());
                    if let Some(decl) = self.decls.get(&key) {
                        let label = format!(
                            "{} `{}` is defined at {}; protobuf puts enum values in the package scope",
                            decl.kind.word(),
                            v.name.name,
                            self.place(fi, decl.file, decl.span)
                        );
                        self.err(
                            fi,
                            v.name.span,
                            format!(
                                "enum value `{}` clashes with a type of the same name",
                                v.name.name
                            ),
                            label,
                        );
                    } else if let Some((ff, other_enum, span)) = values.get(&key) {
                        let label = format!(
                            "also a value of enum `{other_enum}` ({}); protobuf scopes enum values at the package level: prefix them, e.g. `{}_{}`",
                            self.place(fi, *ff, *span),
                            to_screaming(&e.name.name),
                            v.name.name
                        );
                        self.err(
                            fi,
                            v.name.span,
                            format!(
                                "enum value `{}` is already defined in {}",
                                v.name.name,
                                pkg_words(&pkg)
                            ),
                            label,
                        );
                    } else {
                        values.insert(key, (fi, e.name.name.clone(), v.name.span));
                    }
                }
            }
        }
    }

    /// Every service also becomes `<S>Server`, `<S>Client`, `<S>GroupClient`
    /// and a module `snake(S)` in Rust; messages with oneofs become a module
    /// `snake(M)`. Reports a declared type that takes one of those names, and
    /// two items wanting the same module.
    fn check_generated_names(
        &mut self,
        camel: &HashMap<(Vec<String>, String), (usize, String, Span)>,
    ) {
        let mut modules: HashMap<(Vec<String>, String), (usize, String, Span)> = HashMap::new();
        let mut errors = Vec::new();
        for (fi, input) in self.inputs.iter().enumerate() {
            let pkg = self.packages[fi].clone();
            for item in &input.ast.items {
                let (name, module_wanted, kind) = match item {
                    ast::Item::Service(s) => (&s.name, true, "service"),
                    ast::Item::Message(m) => (
                        &m.name,
                        m.members.iter().any(|x| matches!(x, ast::Member::Oneof(_))),
                        "message",
                    ),
                    ast::Item::Enum(_) => continue,
                };
                let rust = names::upper_camel_case(&name.name);
                if let ast::Item::Service(_) = item {
                    for suffix in ["Server", "Client", "GroupClient"] {
                        let generated = format!("{rust}{suffix}");
                        if let Some((ff, other, span)) =
                            camel.get(&(pkg.clone(), generated.clone()))
                        {
                            errors.push((
                                *ff,
                                *span,
                                format!("`{other}` collides with the `{generated}` generated for service `{}`", name.name),
                                format!("service `{}` (at {}) generates `{generated}`: rename one of them", name.name, self.place(*ff, fi, name.span)),
                            ));
                        }
                    }
                }
                if module_wanted {
                    let module = names::snake_case(&name.name);
                    if let Some((ff, other, span)) = modules.get(&(pkg.clone(), module.clone())) {
                        if *other == name.name {
                            // Same name twice: already reported as a duplicate.
                            continue;
                        }
                        errors.push((
                            fi,
                            name.span,
                            format!(
                                "{kind} `{}` and `{other}` both need the Rust module `{module}`",
                                name.name
                            ),
                            format!(
                                "`{other}` is at {}: rename one of them",
                                self.place(fi, *ff, *span)
                            ),
                        ));
                    } else {
                        modules.insert((pkg.clone(), module), (fi, name.name.clone(), name.span));
                    }
                }
            }
        }
        // A package `a.b` next to an item wanting module `b` inside package `a`.
        for (fi, pkg) in self.packages.iter().enumerate() {
            if let Some((last, parent)) = pkg.split_last() {
                if let Some((ff, other, span)) = modules.get(&(parent.to_vec(), last.clone())) {
                    errors.push((
                        *ff,
                        *span,
                        format!("`{other}` needs the Rust module `{last}`, which is also the module of package `{}`", pkg.join(".")),
                        format!("package `{}` is declared in {}: rename one of them", pkg.join("."), self.inputs[fi].path.display()),
                    ));
                }
            }
        }
        errors.sort_by_key(|e| (e.0, e.1.start));
        errors.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1 && a.2 == b.2);
        for (fi, span, msg, label) in errors {
            self.err(fi, span, msg, label);
        }
    }

    /// Files whose declarations `file` can see.
    fn visible(&self, file: usize) -> Vec<usize> {
        let mut v = vec![file];
        for i in self.inputs[file].imports.iter().flatten() {
            if !v.contains(i) {
                v.push(*i);
            }
        }
        v
    }

    fn import_failed(&self, file: usize) -> bool {
        self.inputs[file].imports.iter().any(Option::is_none)
    }

    /// Resolves a type name used in `file`; `None` after reporting.
    fn lookup(&mut self, file: usize, path: &ast::Path) -> Option<Type> {
        let dotted = path.dotted();
        if path.parts.len() == 1 {
            if let Some(s) = Scalar::from_keyword(&dotted) {
                return Some(Type::Scalar(s));
            }
        }
        let here = self.packages[file].clone();
        let visible = self.visible(file);
        // The simple name in this file's package first (as protobuf's inner
        // scope), then the full name; a declaration this file cannot see is
        // remembered for a better message.
        let mut keys = Vec::new();
        if path.parts.len() == 1 {
            keys.push((here.clone(), dotted.clone()));
        }
        if let Some(key) = self.by_full.get(&dotted) {
            keys.push(key.clone());
        }
        let mut found: Option<(Vec<String>, String, DeclKind)> = None;
        let mut elsewhere = None;
        for key in keys {
            let Some(decl) = self.decls.get(&key) else {
                continue;
            };
            if visible.contains(&decl.file) {
                found = Some((key.0, key.1, decl.kind));
                break;
            }
            if elsewhere.is_none() && decl.kind != DeclKind::Service {
                elsewhere = Some(decl.file);
            }
        }
        match found {
            Some((package, name, DeclKind::Message)) => {
                Some(Type::Message(TypeRef { package, name }))
            }
            Some((package, name, DeclKind::Enum)) => Some(Type::Enum(TypeRef { package, name })),
            Some((_, name, DeclKind::Service)) => {
                self.err(
                    file,
                    path.span,
                    format!("`{name}` is a service, not a type"),
                    "expected a message, an enum or a scalar type",
                );
                None
            }
            None => {
                if let Some(other) = elsewhere {
                    let other_path = self.inputs[other].path.display().to_string();
                    self.err(
                        file,
                        path.span,
                        format!("type `{dotted}` is not imported"),
                        format!(
                            "it is declared in `{other_path}`, which this file does not import"
                        ),
                    );
                    return None;
                }
                let mut candidates: Vec<String> =
                    Scalar::ALL.iter().map(|s| s.keyword().to_owned()).collect();
                for ((pkg, name), d) in &self.decls {
                    if d.kind == DeclKind::Service || !visible.contains(&d.file) {
                        continue;
                    }
                    if pkg == &here {
                        candidates.push(name.clone());
                    }
                    candidates.push(full_name(pkg, name));
                }
                let otherwise = if self.import_failed(file) {
                    "not found here; it may be declared in an import that could not be loaded"
                } else {
                    "no message or enum of this name is visible here"
                };
                let label = did_you_mean(&dotted, &candidates, otherwise);
                self.err(file, path.span, format!("unknown type `{dotted}`"), label);
                None
            }
        }
    }

    fn file(&mut self, fi: usize) -> model::File {
        let input = &self.inputs[fi];
        let mut file = model::File {
            path: input.path.clone(),
            package: self.packages[fi].clone(),
            docs: input.ast.docs.clone(),
            imports: input
                .imports
                .iter()
                .flatten()
                .map(|&i| self.inputs[i].path.clone())
                .collect(),
            messages: Vec::new(),
            enums: Vec::new(),
            services: Vec::new(),
            imported: input.imported,
        };
        let ast_file: &ast::File = input.ast;
        let mut seen_imports: HashMap<usize, Span> = HashMap::new();
        for (imp, target) in ast_file.imports.iter().zip(&input.imports) {
            if let Some(t) = target {
                if let Some(first) = seen_imports.get(t) {
                    let label = format!("already imported at {}", self.place(fi, fi, *first));
                    self.err(
                        fi,
                        imp.span,
                        format!("`{}` is imported twice", imp.path),
                        label,
                    );
                } else {
                    seen_imports.insert(*t, imp.span);
                }
            }
        }
        for item in &ast_file.items {
            match item {
                ast::Item::Message(m) => {
                    let msg = self.message(fi, m);
                    file.messages.push(msg);
                }
                ast::Item::Enum(e) => {
                    let en = self.enumeration(fi, e);
                    file.enums.push(en);
                }
                ast::Item::Service(s) => {
                    let sv = self.service(fi, s);
                    file.services.push(sv);
                }
            }
        }
        file
    }

    fn field_type(&mut self, fi: usize, field: &ast::Field) -> Option<model::FieldKind> {
        match &field.ty {
            FieldType::Named(path) => {
                let ty = self.lookup(fi, path)?;
                Some(match field.label {
                    Label::None => model::FieldKind::Single(ty),
                    Label::Optional(_) => model::FieldKind::Optional(ty),
                    Label::Repeated(_) => model::FieldKind::Repeated(ty),
                })
            }
            FieldType::Map { key, value, .. } => {
                if let Label::Optional(s) | Label::Repeated(s) = field.label {
                    self.err(
                        fi,
                        s,
                        "a map field cannot be `optional` or `repeated`",
                        "remove this label: a map is already a collection",
                    );
                }
                let key_ty = self.lookup(fi, key);
                let value_ty = self.lookup(fi, value);
                let key_scalar = match key_ty {
                    Some(Type::Scalar(s)) if s.is_valid_map_key() => Some(s),
                    Some(_) => {
                        self.err(
                            fi,
                            key.span,
                            format!("illegal map key type `{}`", key.dotted()),
                            "map keys must be an integer type, `bool` or `string`",
                        );
                        None
                    }
                    None => None,
                };
                Some(model::FieldKind::Map(key_scalar?, value_ty?))
            }
        }
    }

    fn message(&mut self, fi: usize, m: &ast::Message) -> model::Message {
        let mut out = model::Message {
            name: m.name.name.clone(),
            docs: m.docs.clone(),
            fields: Vec::new(),
            oneofs: Vec::new(),
            reserved_ranges: Vec::new(),
            reserved_names: Vec::new(),
        };
        // Reserved first: they apply to every field, wherever written.
        let mut reserved_spans: Vec<(u32, u32, Span)> = Vec::new();
        let mut reserved_names: HashMap<String, Span> = HashMap::new();
        for member in &m.members {
            let Member::Reserved(r) = member else {
                continue;
            };
            for item in &r.items {
                match item {
                    ReservedItem::Range { start, end, span } => {
                        let lo = plain_u32(start).filter(|n| (1..=MAX_FIELD_NUMBER).contains(n));
                        let hi = match end {
                            None => Some(MAX_FIELD_NUMBER),
                            Some(e) => plain_u32(e).filter(|n| (1..=MAX_FIELD_NUMBER).contains(n)),
                        };
                        let (Some(lo), Some(hi)) = (lo, hi) else {
                            if start.magnitude.is_none()
                                || end.as_ref().is_some_and(|e| e.magnitude.is_none())
                            {
                                continue; // reported by the lexer
                            }
                            self.err(
                                fi,
                                *span,
                                "reserved field number out of range",
                                format!("field numbers are 1 to {MAX_FIELD_NUMBER}"),
                            );
                            continue;
                        };
                        if lo > hi {
                            self.err(
                                fi,
                                *span,
                                format!("empty reserved range `{lo} to {hi}`"),
                                "the first number must not exceed the last",
                            );
                            continue;
                        }
                        if let Some((a, b, s)) =
                            reserved_spans.iter().find(|(a, b, _)| lo <= *b && *a <= hi)
                        {
                            let label = format!(
                                "overlaps `{a} to {b}` reserved at {}",
                                self.place(fi, fi, *s)
                            );
                            self.err(fi, *span, "reserved ranges overlap", label);
                            continue;
                        }
                        reserved_spans.push((lo, hi, *span));
                        out.reserved_ranges.push((lo, hi));
                    }
                    ReservedItem::Name { name, span } => {
                        if !is_identifier(name) {
                            self.err(
                                fi,
                                *span,
                                format!("reserved name `{name}` is not a valid field name"),
                                "reserved names are identifiers",
                            );
                        } else if let Some(first) = reserved_names.get(name) {
                            let label =
                                format!("already reserved at {}", self.place(fi, fi, *first));
                            self.err(
                                fi,
                                *span,
                                format!("field name `{name}` is reserved twice"),
                                label,
                            );
                        } else {
                            reserved_names.insert(name.clone(), *span);
                            out.reserved_names.push(name.clone());
                        }
                    }
                }
            }
        }

        // Every field, in or out of oneofs, shares the message's names and numbers.
        let mut sites: Vec<FieldSite<'_>> = Vec::new();
        for member in &m.members {
            match member {
                Member::Field(f) => sites.push(FieldSite { field: f }),
                Member::Oneof(o) => sites.extend(o.fields.iter().map(|f| FieldSite { field: f })),
                Member::Reserved(_) => {}
            }
        }
        let mut by_name: HashMap<&str, Span> = HashMap::new();
        let mut by_rust: HashMap<String, (&str, Span)> = HashMap::new();
        let mut by_json: HashMap<String, (&str, Span)> = HashMap::new();
        let mut by_number: HashMap<u32, (&str, Span)> = HashMap::new();
        let mut tags: HashMap<*const ast::Field, u32> = HashMap::new();
        for site in &sites {
            let f = site.field;
            let name = f.name.name.as_str();
            if let Some(first) = by_name.get(name) {
                let label = format!("first defined at {}", self.place(fi, fi, *first));
                self.err(
                    fi,
                    f.name.span,
                    format!("duplicate field `{name}` in message `{}`", m.name.name),
                    label,
                );
            } else {
                by_name.insert(name, f.name.span);
                let _ = self.check_rust_name(
                    fi,
                    &f.name,
                    "field",
                    &mut by_rust,
                    names::snake_case(name),
                    "snake_case",
                );
                let json = names::json_name(name);
                if let Some((other, span)) = by_json.get(&json) {
                    let label = format!(
                        "`{other}` (at {}) has the same JSON name `{json}`, which protoc rejects",
                        self.place(fi, fi, *span)
                    );
                    if names::snake_case(other) != names::snake_case(name) {
                        self.err(
                            fi,
                            f.name.span,
                            format!("field `{name}` collides with `{other}`"),
                            label,
                        );
                    }
                } else {
                    by_json.insert(json, (name, f.name.span));
                }
                if reserved_names.contains_key(name) {
                    let label = format!("reserved at {}", self.place(fi, fi, reserved_names[name]));
                    self.err(
                        fi,
                        f.name.span,
                        format!("field name `{name}` is reserved"),
                        label,
                    );
                }
            }
            // Numbers.
            let number_text = f.number.to_string();
            let Some(n) = plain_u32(&f.number).filter(|n| (1..=MAX_FIELD_NUMBER).contains(n))
            else {
                if f.number.magnitude.is_none() {
                    continue; // too large for 64 bits: reported by the lexer
                }
                self.err(
                    fi,
                    f.number_span,
                    format!("field number `{number_text}` is out of range"),
                    format!("field numbers are 1 to {MAX_FIELD_NUMBER}"),
                );
                continue;
            };
            if PROTOBUF_RESERVED.contains(&n) {
                self.err(
                    fi,
                    f.number_span,
                    format!("field number {n} is reserved by protobuf"),
                    "19000 to 19999 are reserved for the protobuf implementation",
                );
                continue;
            }
            if let Some((a, b, s)) = reserved_spans
                .iter()
                .find(|(a, b, _)| (*a..=*b).contains(&n))
            {
                let range = if a == b {
                    a.to_string()
                } else {
                    format!("{a} to {b}")
                };
                let label = format!("`reserved {range}` at {}", self.place(fi, fi, *s));
                self.err(
                    fi,
                    f.number_span,
                    format!("field number {n} is reserved"),
                    label,
                );
                continue;
            }
            if let Some((other, span)) = by_number.get(&n) {
                let label = format!("already used by `{other}` at {}", self.place(fi, fi, *span));
                self.err(
                    fi,
                    f.number_span,
                    format!("duplicate field number {n} in message `{}`", m.name.name),
                    label,
                );
                continue;
            }
            by_number.insert(n, (name, f.number_span));
            tags.insert(f as *const ast::Field, n);
        }

        // Oneof names: against each other and against field names (prost
        // makes the oneof a snake_case struct field and an UpperCamelCase enum).
        let mut oneof_rust: HashMap<String, (&str, Span)> = HashMap::new();
        for member in &m.members {
            let Member::Oneof(o) = member else { continue };
            let name = o.name.name.as_str();
            if let Some(first) = by_name.get(name) {
                let label = format!(
                    "a field or oneof `{name}` is defined at {}",
                    self.place(fi, fi, *first)
                );
                self.err(
                    fi,
                    o.name.span,
                    format!("duplicate name `{name}` in message `{}`", m.name.name),
                    label,
                );
                continue;
            }
            by_name.insert(name, o.name.span);
            if self.check_rust_name(
                fi,
                &o.name,
                "oneof",
                &mut by_rust,
                names::snake_case(name),
                "snake_case",
            ) {
                self.check_rust_name(
                    fi,
                    &o.name,
                    "oneof",
                    &mut oneof_rust,
                    names::upper_camel_case(name),
                    "UpperCamelCase",
                );
            }
            if o.fields.is_empty() {
                self.err(
                    fi,
                    o.name.span,
                    format!("oneof `{name}` has no fields"),
                    "a oneof needs at least one field",
                );
            }
        }

        // Types, in declaration order; oneof fields must be plain.
        for member in &m.members {
            match member {
                Member::Field(f) => {
                    let kind = self.field_type(fi, f);
                    if let (Some(kind), Some(&tag)) = (kind, tags.get(&(f as *const ast::Field))) {
                        out.fields.push(model::Field {
                            name: f.name.name.clone(),
                            docs: f.docs.clone(),
                            tag,
                            kind,
                        });
                    }
                }
                Member::Oneof(o) => {
                    let mut fields = Vec::new();
                    for f in &o.fields {
                        let plain = match (&f.label, &f.ty) {
                            (Label::Optional(s), _) => {
                                self.err(
                                    fi,
                                    *s,
                                    "a oneof field cannot be `optional`",
                                    "oneof fields already have presence: remove `optional`",
                                );
                                false
                            }
                            (Label::Repeated(s), _) => {
                                self.err(
                                    fi,
                                    *s,
                                    "a oneof field cannot be `repeated`",
                                    "wrap the list in a message",
                                );
                                false
                            }
                            (_, FieldType::Map { span, .. }) => {
                                self.err(
                                    fi,
                                    *span,
                                    "a oneof field cannot be a map",
                                    "wrap the map in a message",
                                );
                                false
                            }
                            _ => true,
                        };
                        let FieldType::Named(path) = &f.ty else {
                            continue;
                        };
                        let ty = self.lookup(fi, path);
                        if let (true, Some(ty), Some(&tag)) =
                            (plain, ty, tags.get(&(f as *const ast::Field)))
                        {
                            fields.push(model::OneofField {
                                name: f.name.name.clone(),
                                docs: f.docs.clone(),
                                tag,
                                ty,
                            });
                        }
                    }
                    out.oneofs.push(model::Oneof {
                        name: o.name.name.clone(),
                        docs: o.docs.clone(),
                        fields,
                    });
                }
                Member::Reserved(_) => {}
            }
        }
        let _ = sites;
        out
    }

    /// Checks that `rust` (the converted name of `ident`) is a legal Rust
    /// identifier and unique in `seen`.
    fn check_rust_name<'n>(
        &mut self,
        fi: usize,
        ident: &'n Ident,
        what: &str,
        seen: &mut HashMap<String, (&'n str, Span)>,
        rust: String,
        case: &str,
    ) -> bool {
        if names::is_forbidden(&rust) {
            let shown = if rust.is_empty() {
                "nothing".to_owned()
            } else {
                format!("`{rust}`")
            };
            self.err(
                fi,
                ident.span,
                format!("{what} name `{}` cannot be used in Rust", ident.name),
                format!("it becomes {shown}, which cannot be an identifier, not even a raw one"),
            );
            return false;
        }
        if let Some((other, span)) = seen.get(&rust) {
            let label = format!(
                "`{other}` (at {}) also becomes `{rust}`",
                self.place(fi, fi, *span)
            );
            self.err(
                fi,
                ident.span,
                format!(
                    "{what} `{}` collides with `{other}` after conversion to {case}",
                    ident.name
                ),
                label,
            );
            return false;
        }
        seen.insert(rust, (ident.name.as_str(), ident.span));
        true
    }

    fn enumeration(&mut self, fi: usize, e: &ast::Enum) -> model::Enum {
        let mut out = model::Enum {
            name: e.name.name.clone(),
            docs: e.docs.clone(),
            values: Vec::new(),
        };
        if e.values.is_empty() {
            self.err(
                fi,
                e.name.span,
                format!("enum `{}` has no values", e.name.name),
                "an enum needs at least its zero value",
            );
        }
        let mut by_number: HashMap<i32, (&str, Span)> = HashMap::new();
        let mut by_rust: HashMap<String, (&str, Span)> = HashMap::new();
        for (i, v) in e.values.iter().enumerate() {
            let number = v.number.as_i64().and_then(|n| i32::try_from(n).ok());
            let Some(number) = number else {
                if v.number.magnitude.is_none() {
                    continue; // reported by the lexer
                }
                self.err(
                    fi,
                    v.number_span,
                    format!("enum value number `{}` is out of range", v.number),
                    "enum numbers are 32-bit signed integers",
                );
                continue;
            };
            if i == 0 && number != 0 {
                self.err(
                    fi,
                    v.number_span,
                    format!("the first value of enum `{}` must be 0", e.name.name),
                    "proto3 enums start with their default value, 0",
                );
            }
            if let Some((other, span)) = by_number.get(&number) {
                let label = format!(
                    "already used by `{other}` at {}; aliases are not supported",
                    self.place(fi, fi, *span)
                );
                self.err(
                    fi,
                    v.number_span,
                    format!("duplicate enum number {number} in enum `{}`", e.name.name),
                    label,
                );
            } else {
                by_number.insert(number, (&v.name.name, v.name.span));
            }
            let rust = names::enum_value(&e.name.name, &v.name.name);
            if names::is_forbidden(&rust) {
                self.err(
                    fi,
                    v.name.span,
                    format!("enum value name `{}` cannot be used in Rust", v.name.name),
                    format!("it becomes `{rust}`, which cannot be an identifier"),
                );
            } else if let Some((other, span)) = by_rust.get(&rust) {
                if *other != v.name.name {
                    let label = format!(
                        "`{other}` (at {}) also becomes `{rust}`",
                        self.place(fi, fi, *span)
                    );
                    self.err(
                        fi,
                        v.name.span,
                        format!(
                            "enum value `{}` collides with `{other}` in Rust",
                            v.name.name
                        ),
                        format!("{label} (UpperCamelCase, enum name prefix stripped)"),
                    );
                }
            } else {
                by_rust.insert(rust, (&v.name.name, v.name.span));
            }
            out.values.push(model::EnumValue {
                name: v.name.name.clone(),
                docs: v.docs.clone(),
                number,
            });
        }
        out
    }

    /// Resolves a method's request, response or raises type: must be a message.
    fn message_type(&mut self, fi: usize, path: &ast::Path, role: &str) -> Option<TypeRef> {
        match self.lookup(fi, path)? {
            Type::Message(t) => Some(t),
            Type::Scalar(s) => {
                self.err(
                    fi,
                    path.span,
                    format!(
                        "the {role} of a method must be a message, not `{}`",
                        s.keyword()
                    ),
                    format!(
                        "wrap it in a message, e.g. `message Wrapped {{ {} value = 1; }}`",
                        s.keyword()
                    ),
                );
                None
            }
            Type::Enum(t) => {
                self.err(
                    fi,
                    path.span,
                    format!(
                        "the {role} of a method must be a message, not enum `{}`",
                        t.name
                    ),
                    "wrap it in a message",
                );
                None
            }
        }
    }

    fn service(&mut self, fi: usize, s: &ast::Service) -> model::Service {
        let mut out = model::Service {
            name: s.name.name.clone(),
            docs: s.docs.clone(),
            methods: Vec::new(),
        };
        let package = self.packages[fi].join(".");
        let mut by_name: HashMap<&str, Span> = HashMap::new();
        let mut by_rust: HashMap<String, (&str, Span)> = HashMap::new();
        let mut by_id: HashMap<u32, (&str, Span)> = HashMap::new();
        for m in &s.methods {
            let name = m.name.name.as_str();
            let mut ok = true;
            if let Some(first) = by_name.get(name) {
                let label = format!("first defined at {}", self.place(fi, fi, *first));
                self.err(
                    fi,
                    m.name.span,
                    format!("duplicate method `{name}` in service `{}`", s.name.name),
                    label,
                );
                ok = false;
            } else {
                by_name.insert(name, m.name.span);
                let _ = self.check_rust_name(
                    fi,
                    &m.name,
                    "method",
                    &mut by_rust,
                    names::snake_case(name),
                    "snake_case",
                );
                let rust = names::snake_case(name);
                if RESERVED_STUB_METHODS.contains(&rust.as_str()) {
                    let label = format!(
                        "it becomes `{rust}`, which the generated client stubs define themselves"
                    );
                    self.err(
                        fi,
                        m.name.span,
                        format!("method `{name}` cannot be used in Rust"),
                        label,
                    );
                    ok = false;
                }
                let id = model::method_id(&package, &s.name.name, name);
                if let Some((other, span)) = by_id.get(&id) {
                    let label = format!(
                        "`{other}` (at {}) has the same id: rename one of them",
                        self.place(fi, fi, *span)
                    );
                    self.err(
                        fi,
                        m.name.span,
                        format!(
                            "methods `{other}` and `{name}` have the same method id {id:#010x}"
                        ),
                        label,
                    );
                    ok = false;
                } else {
                    by_id.insert(id, (name, m.name.span));
                }
            }
            let request = self.message_type(fi, &m.request, "request");
            let response = m
                .response
                .as_ref()
                .map(|p| self.message_type(fi, p, "reply"));
            let raises = m
                .raises
                .as_ref()
                .map(|p| self.message_type(fi, p, "raised error"));
            let attrs = self.attributes(fi, m);
            let (Some(request), Some(attrs)) = (request, attrs) else {
                continue;
            };
            let response = match response {
                Some(Some(t)) => Some(t),
                Some(None) => continue,
                None => None,
            };
            let raises = match raises {
                Some(Some(t)) => Some(t),
                Some(None) => continue,
                None => None,
            };
            if !ok {
                continue;
            }
            let oneway = m.oneway.is_some();
            out.methods.push(model::Method {
                name: name.to_owned(),
                docs: m.docs.clone(),
                id: model::method_id(&package, &s.name.name, name),
                request,
                response,
                raises,
                oneway,
                idempotent: attrs.idempotent,
                protocol: attrs
                    .protocol
                    .unwrap_or(if oneway { Protocol::R } else { Protocol::RR }),
                timeout_ms: attrs.timeout_ms,
                retries: attrs.retries,
                style: attrs
                    .style
                    .unwrap_or(if oneway { Style::OneWay } else { Style::Sync }),
            });
        }
        out
    }

    /// Checks a method's attributes; `None` after reporting an error.
    fn attributes(&mut self, fi: usize, m: &ast::Method) -> Option<Attrs> {
        let mut a = Attrs::default();
        let mut ok = true;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut protocol_span = None;
        let mut idempotent_span = None;
        for attr in &m.attributes {
            let name = attr.name.name.as_str();
            if !ATTRIBUTES.contains(&name) {
                let candidates: Vec<String> = ATTRIBUTES.iter().map(|s| (*s).to_owned()).collect();
                let label = did_you_mean(
                    name,
                    &candidates,
                    "expected `idempotent`, `protocol`, `timeout`, `retries` or `style`",
                );
                self.err(
                    fi,
                    attr.name.span,
                    format!("unknown attribute `{name}`"),
                    label,
                );
                ok = false;
                continue;
            }
            if let Some(first) = seen.get(name) {
                let label = format!("already given at {}", self.place(fi, fi, *first));
                self.err(
                    fi,
                    attr.name.span,
                    format!("duplicate attribute `{name}`"),
                    label,
                );
                ok = false;
                continue;
            }
            seen.insert(name, attr.name.span);
            if name == "idempotent" {
                if let Some(v) = &attr.value {
                    self.err(
                        fi,
                        v.span(),
                        "`idempotent` takes no value",
                        "write just `idempotent`",
                    );
                    ok = false;
                }
                a.idempotent = true;
                idempotent_span = Some(attr.name.span);
                continue;
            }
            let Some(value) = &attr.value else {
                let example = match name {
                    "protocol" => "protocol = RRA",
                    "timeout" => "timeout = 250ms",
                    "retries" => "retries = 3",
                    _ => "style = deferred",
                };
                self.err(
                    fi,
                    attr.name.span,
                    format!("`{name}` needs a value"),
                    format!("e.g. `{example}`"),
                );
                ok = false;
                continue;
            };
            let word = match value {
                AttrValue::Ident(i) => Some(i.name.as_str()),
                _ => None,
            };
            match name {
                "protocol" => match word {
                    Some("R") => a.protocol = Some(Protocol::R),
                    Some("RR") => a.protocol = Some(Protocol::RR),
                    Some("RRA") => a.protocol = Some(Protocol::RRA),
                    _ => {
                        self.bad_value(fi, value, name, &["R", "RR", "RRA"]);
                        ok = false;
                    }
                },
                "style" => match word {
                    Some("sync") => a.style = Some(Style::Sync),
                    Some("async") => a.style = Some(Style::Async),
                    Some("deferred") => a.style = Some(Style::Deferred),
                    _ => {
                        self.bad_value(fi, value, name, &["sync", "async", "deferred"]);
                        ok = false;
                    }
                },
                "timeout" => match value {
                    AttrValue::Int(lit, span) => match self.timeout(fi, lit, *span) {
                        Some(ms) => a.timeout_ms = Some(ms),
                        None => ok = false,
                    },
                    _ => {
                        self.err(
                            fi,
                            value.span(),
                            "illegal value for `timeout`",
                            "expected a duration such as `250ms` or `5s`",
                        );
                        ok = false;
                    }
                },
                _ => match value {
                    // "retries"
                    AttrValue::Int(lit, span)
                        if lit.suffix.is_none()
                            && !lit.negative
                            && lit.magnitude.is_some_and(|n| n <= u64::from(MAX_RETRIES)) =>
                    {
                        let _ = span;
                        a.retries = lit.magnitude.and_then(|n| u32::try_from(n).ok());
                    }
                    _ => {
                        self.err(
                            fi,
                            value.span(),
                            "illegal value for `retries`",
                            format!("expected a number from 0 to {MAX_RETRIES}"),
                        );
                        ok = false;
                    }
                },
            }
            if name == "protocol" {
                protocol_span = Some(value.span());
            }
            if m.oneway.is_some() {
                match name {
                    "protocol" if matches!(a.protocol, Some(Protocol::RR | Protocol::RRA)) => {
                        self.err(
                            fi,
                            value.span(),
                            "a `oneway` method always uses protocol R",
                            "it has no reply: remove this, or remove `oneway`",
                        );
                        ok = false;
                    }
                    "retries" => {
                        self.err(
                            fi,
                            attr.name.span,
                            "a `oneway` method is never retried",
                            "protocol R sends the request once: remove `retries`",
                        );
                        ok = false;
                    }
                    "style" => {
                        self.err(
                            fi,
                            attr.name.span,
                            "a `oneway` method has no call style to choose",
                            "it is always one-way: remove `style`",
                        );
                        ok = false;
                    }
                    _ => {}
                }
            }
        }
        if m.oneway.is_none() && a.protocol == Some(Protocol::R) {
            let span = protocol_span.unwrap_or(m.name.span);
            self.err(
                fi,
                span,
                "protocol = R has no reply: declare the method `oneway`",
                "R sends only the request",
            );
            ok = false;
        }
        if a.idempotent && a.protocol == Some(Protocol::RRA) {
            let span = protocol_span.or(idempotent_span).unwrap_or(m.name.span);
            self.err(
                fi,
                span,
                "idempotent methods keep no reply history, so there is nothing to acknowledge",
                "use `protocol = RR`, or remove `idempotent`",
            );
            ok = false;
        }
        ok.then_some(a)
    }

    fn bad_value(&mut self, fi: usize, value: &AttrValue, name: &str, allowed: &[&str]) {
        let list = allowed.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>();
        let expected = format!(
            "expected {} or {}",
            list[..list.len() - 1].join(", "),
            list[list.len() - 1]
        );
        let label = match value {
            AttrValue::Ident(i) => {
                let candidates: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
                did_you_mean(&i.name, &candidates, &expected)
            }
            _ => expected,
        };
        self.err(
            fi,
            value.span(),
            format!("illegal value for `{name}`"),
            label,
        );
    }

    fn timeout(&mut self, fi: usize, lit: &ast::IntLit, span: Span) -> Option<u64> {
        let factor = match lit.suffix.as_deref() {
            Some("ms") => 1,
            Some("s") => 1000,
            None => {
                self.err(
                    fi,
                    span,
                    "`timeout` needs a unit",
                    format!("write `{lit}ms` or `{lit}s`"),
                );
                return None;
            }
            Some(other) => {
                self.err(
                    fi,
                    span,
                    format!("unknown unit `{other}` in `timeout`"),
                    "the units are `ms` and `s`",
                );
                return None;
            }
        };
        if lit.negative || lit.magnitude == Some(0) {
            self.err(
                fi,
                span,
                "`timeout` must be greater than zero",
                "a call needs time to run",
            );
            return None;
        }
        match lit.magnitude.and_then(|n| n.checked_mul(factor)) {
            Some(ms) => Some(ms),
            None => {
                self.err(
                    fi,
                    span,
                    "`timeout` is too large",
                    "it must fit in 64 bits of milliseconds",
                );
                None
            }
        }
    }
}

#[derive(Debug, Default)]
struct Attrs {
    idempotent: bool,
    protocol: Option<Protocol>,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    style: Option<Style>,
}

fn full_name(pkg: &[String], name: &str) -> String {
    if pkg.is_empty() {
        name.to_owned()
    } else {
        format!("{}.{name}", pkg.join("."))
    }
}

fn pkg_words(pkg: &[String]) -> String {
    if pkg.is_empty() {
        "the files without a package".to_owned()
    } else {
        format!("package `{}`", pkg.join("."))
    }
}

fn to_screaming(name: &str) -> String {
    names::snake_case(name).to_uppercase()
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("TimeReadng", ["TimeReading", "Empty"]),
            Some("TimeReading")
        );
        assert_eq!(suggest("idempotant", ATTRIBUTES), Some("idempotent"));
        assert_eq!(suggest("rra", ["R", "RR", "RRA"]), Some("RRA"));
        assert_eq!(suggest("Zzzzzz", ["TimeReading"]), None);
        assert_eq!(suggest("Emtpy", ["Empty"]), Some("Empty"));
        assert_eq!(distance("ab", "ba"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
