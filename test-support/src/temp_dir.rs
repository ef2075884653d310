//! Temporary directories for tests: `tempfile`'s, named after the test so a
//! leftover (a killed test run) says where it came from.

use std::path::Path;

/// A fresh, existing directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// A new directory whose name starts with `sessiondb-<label>-`.
    ///
    /// Panics when the directory cannot be created: a test cannot go on
    /// without it.
    pub fn new(label: &str) -> TempDir {
        let directory = tempfile::Builder::new()
            .prefix(&format!("sessiondb-{label}-"))
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a temp dir for {label}: {error}"));
        TempDir(directory)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}
