//! Placeholder: owned by a helper; see the module's brief.
