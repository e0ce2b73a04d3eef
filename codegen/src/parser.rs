//! Front end (skeleton).
