//! `build.rs` entry point. (Skeleton for the back-end owner.)

/// Compiles `.idl` files to Rust in `OUT_DIR` from a `build.rs`.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    _private: (),
}

impl Builder {
    /// A builder with default settings.
    pub fn new() -> Builder {
        Builder::default()
    }
}
