//! Small files replaced whole: a crash leaves the old file or the new one,
//! never a mix and never a name pointing at unsynced data.

use std::io::Write;
use std::path::Path;

/// Replaces the file at `path` with `bytes`: written to `<path>.tmp`
/// (extension replaced), `fsync`ed, renamed over `path`, and the directory
/// `fsync`ed so the rename itself survives a power cut.
pub fn replace_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    sync_parent(path)
}

/// `fsync`s the directory holding `path`, so a rename or removal of
/// `path` survives a power cut.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_stays() {
        let directory = sessiondb_test_support::TempDir::new("durable-file");
        let path = directory.path().join("state.json");
        replace_whole(&path, b"first").unwrap();
        replace_whole(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }
}
