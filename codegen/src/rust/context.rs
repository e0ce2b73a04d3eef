//! What every item generator is given: the package being generated and
//! which messages must be boxed.
//!
//! [`reachability`] runs once over the whole model; each file's items are
//! then generated with a [`Context`] for its package, which answers
//! [`Context::is_recursive`] for the fields of `types` (prost-build boxes a
//! message field exactly when it closes a cycle of non-repeated fields).

use crate::model::{FieldKind, Message, Model, Type, TypeRef};
use std::collections::{HashMap, HashSet};

/// What every item generator needs: the package being generated and the
/// recursion analysis of the whole model.
pub(super) struct Context<'a> {
    /// The package whose module the items go into.
    pub(super) package: &'a [String],
    /// For each message (full name), the messages reachable from it through
    /// non-repeated message fields (singular, optional, oneof).
    reach: &'a HashMap<TypeRef, HashSet<TypeRef>>,
}

impl<'a> Context<'a> {
    /// The context for the items of `package`, with `reach` computed by
    /// [`reachability`] over the whole model.
    pub(super) fn new(
        package: &'a [String],
        reach: &'a HashMap<TypeRef, HashSet<TypeRef>>,
    ) -> Self {
        Context { package, reach }
    }

    /// Whether a field of type `field_type` in `msg` (of this package) must
    /// be boxed: `msg` is reachable from `field_type` through non-repeated
    /// message fields, as prost-build decides.
    pub(super) fn is_recursive(&self, msg: &Message, field_type: &TypeRef) -> bool {
        let me = TypeRef {
            package: self.package.to_vec(),
            name: msg.name.clone(),
        };
        *field_type == me || self.reach.get(field_type).is_some_and(|r| r.contains(&me))
    }
}

/// For every message, the set of messages reachable through singular,
/// optional and oneof message fields (repeated and map fields are behind a
/// `Vec`/`HashMap` and need no box).
pub(super) fn reachability(model: &Model) -> HashMap<TypeRef, HashSet<TypeRef>> {
    let mut edges: HashMap<TypeRef, Vec<TypeRef>> = HashMap::new();
    for file in &model.files {
        for m in &file.messages {
            let me = TypeRef {
                package: file.package.clone(),
                name: m.name.clone(),
            };
            let mut out = Vec::new();
            for f in &m.fields {
                if let FieldKind::Single(Type::Message(r)) | FieldKind::Optional(Type::Message(r)) =
                    &f.kind
                {
                    out.push(r.clone());
                }
            }
            for o in &m.oneofs {
                for f in &o.fields {
                    if let Type::Message(r) = &f.ty {
                        out.push(r.clone());
                    }
                }
            }
            edges.insert(me, out);
        }
    }
    let mut reach = HashMap::new();
    for start in edges.keys() {
        let mut seen: HashSet<TypeRef> = HashSet::new();
        let mut stack: Vec<&TypeRef> = edges
            .get(start)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        while let Some(t) = stack.pop() {
            if seen.insert(t.clone()) {
                if let Some(next) = edges.get(t) {
                    stack.extend(next.iter());
                }
            }
        }
        reach.insert(start.clone(), seen);
    }
    reach
}
