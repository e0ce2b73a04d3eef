//! The per-test directory that holds the nodes' logs and data.
//!
//! A [`TestDir`] is either a fresh temporary directory, removed when the
//! `TestDir` is dropped unless the thread is panicking (a failing test keeps
//! its logs, and the error messages name them), or a directory the caller
//! gives, which is never removed.

use std::io;
use std::path::{Path, PathBuf};

/// A directory for one test's nodes: each node gets `<dir>/<name>/`.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl TestDir {
    /// A fresh temporary directory (`rpc-testkit-*` under the system's
    /// temporary directory), removed on drop unless the thread is
    /// panicking.
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
        })
    }

    /// The given directory (created if missing); never removed.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn at(path: impl Into<PathBuf>) -> io::Result<TestDir> {
        let path = path.into();
        std::fs::create_dir_all(&path)?;
        Ok(TestDir { path, temp: None })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory after the test, whatever its outcome.
    pub fn keep(&mut self) {
        if let Some(temp) = &mut self.temp {
            temp.disable_cleanup(true);
            tracing::info!(dir = %self.path.display(), "test directory kept");
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
        if std::thread::panicking() {
            if let Some(temp) = &mut self.temp {
                temp.disable_cleanup(true);
                tracing::warn!(dir = %self.path.display(), "test failed: its directory is kept");
            }
        }
    }
}
