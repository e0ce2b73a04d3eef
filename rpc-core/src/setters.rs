//! Builder setters of one field each, written once (the server builder,
//! the fault injector's configuration).

/// Writes `pub fn name(mut self, arg: T) -> Self`, which sets
/// `self.field.path` to `arg`, for each `name(arg: T) => field.path;`,
/// with the doc comments written above it.
macro_rules! field_setters {
    ($($(#[$doc:meta])* $name:ident($arg:ident: $ty:ty) => $($field:ident).+;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $arg: $ty) -> Self {
                self.$($field).+ = $arg;
                self
            }
        )*
    };
}

pub(crate) use field_setters;
