//! One `fallback run` per activity at a time on this machine: a lock file
//! beside the journal, taken with the standard library's `try_lock`. The
//! lock is the process's: it is released when the process ends, however it ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `JOURNAL.SLUG.lock`, in the journal's directory.
pub fn path_for(journal: &Path, slug: &str) -> PathBuf {
    let name = journal
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "fallback-journal".into());
    journal.with_file_name(format!("{name}.{slug}.lock"))
}

/// Takes the lock at `path` (creating its directory), or None when another
/// process holds it.
pub fn try_lock(path: &Path) -> Result<Option<File>> {
    let fail = |e: std::io::Error| {
        Error::Io(std::io::Error::other(format!(
            "cannot take the fallback's lock file {}: {e}; it sits beside the journal: make that directory \
             writable, or pass --journal PATH (ACTCORE_JOURNAL)",
            path.display()
        )))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(fail)?;
            writeln!(file, "{}", std::process::id()).map_err(fail)?;
            Ok(Some(file))
        }
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("j.sqlite"), "sweep");
        assert_eq!(path, dir.path().join("j.sqlite.sweep.lock"));
        let first = try_lock(&path).unwrap().expect("first takes it");
        assert!(try_lock(&path).unwrap().is_none(), "second is refused");
        drop(first);
        assert!(try_lock(&path).unwrap().is_some(), "free again");
    }
}
