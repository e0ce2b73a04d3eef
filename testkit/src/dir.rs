//! The per-test directory that holds the nodes' logs and data.
//!
//! A [`TestDir`] is either a fresh temporary directory or a directory the
//! caller gives, which is never removed. A temporary directory is removed
//! only when the test says it passed ([`TestDir::passed`], or
//! [`Cluster::passed`](crate::Cluster::passed) for a cluster's); dropped
//! without that, it is kept, with a warning naming it. So the logs that
//! the kit's error messages name survive every way a test can fail: a
//! panic, an `Err` returned through `?`, and a timeout that drops the
//! test's future half-way.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! let dir = rpc_testkit::TestDir::new()?;
//! let path = dir.path().to_path_buf();
//! // ... the test, returning early with `?` on failure ...
//! dir.passed(); // the last line: only a test that got here cleans up
//! assert!(!path.exists());
//! # Ok(())
//! # }
//! ```

use std::io;
use std::path::{Path, PathBuf};

/// A directory for one test's nodes: each node gets `<dir>/<name>/`.
///
/// Kept after the test unless [`passed`](TestDir::passed) is called.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
    /// The temporary directory until the test passed; `None` for a
    /// directory given with [`TestDir::at`].
    temp: Option<tempfile::TempDir>,
    /// Kept even if the test passes ([`TestDir::keep`]).
    keep: bool,
}

impl TestDir {
    /// A fresh temporary directory (`rpc-testkit-*` under the system's
    /// temporary directory), removed by [`passed`](TestDir::passed) and
    /// kept otherwise.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new() -> io::Result<TestDir> {
        let temp = tempfile::Builder::new().prefix("rpc-testkit-").tempdir()?;
        let path = temp.path().to_path_buf();
        tracing::debug!(dir = %path.display(), "test directory created");
        Ok(TestDir {
            path,
            temp: Some(temp),
            keep: false,
        })
    }

    /// The given directory (created if missing); never removed.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn at(path: impl Into<PathBuf>) -> io::Result<TestDir> {
        let path = path.into();
        std::fs::create_dir_all(&path)?;
        Ok(TestDir {
            path,
            temp: None,
            keep: true,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory after the test, whatever its outcome.
    pub fn keep(&mut self) {
        self.keep = true;
        tracing::info!(dir = %self.path.display(), "test directory will be kept");
    }

    /// The test passed: removes a temporary directory (unless
    /// [`keep`](TestDir::keep) was called). Call it last, once every
    /// check is done, and after the nodes that write into the directory
    /// are dropped; a test that does not get here keeps its directory.
    ///
    /// A directory that cannot be removed is logged, not reported: the
    /// test passed.
    pub fn passed(mut self) {
        let Some(mut temp) = self.temp.take() else {
            return;
        };
        if self.keep {
            temp.disable_cleanup(true);
            tracing::info!(dir = %self.path.display(), "test passed: its directory is kept as asked");
            return;
        }
        if let Err(e) = temp.close() {
            tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove the test directory");
        }
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Still here: `passed` was not called, so the test failed (a
        // panic, an error returned early, a timeout dropping its future)
        // or forgot to say it passed. Either way the logs stay.
        if let Some(temp) = &mut self.temp {
            temp.disable_cleanup(true);
            tracing::warn!(
                dir = %self.path.display(),
                "test did not pass (no `passed()` call): its directory is kept"
            );
        }
    }
}
