//! The gate shared by the test support modules of this package.

use std::sync::Arc;

/// A gate that handlers wait at until the test opens it: how a test shows
/// that a call returned before a handler finished (the handler cannot
/// finish before the gate opens, and the test opens it only after the call
/// returned), whatever the scheduling.
#[derive(Debug, Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    /// A closed gate.
    pub fn closed() -> Gate {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    /// Opens the gate for good: every waiter passes, and so will later ones.
    pub fn open(&self) {
        self.0.close();
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.0.is_closed()
    }

    /// Waits until the gate is open (the semaphore never has a permit: an
    /// acquire ends only when it is closed).
    pub async fn pass(&self) {
        let _ = self.0.acquire().await;
    }
}
