//! Writing a file so that a reader sees either the old file or the whole new
//! one, never a part, and a secret is never readable by others, not even
//! briefly.
//!
//! `tempfile` creates the temporary file in the same directory with mode
//! 0600; it is filled, synced, renamed over the target, and the directory is
//! synced so the rename survives a crash. Public files are widened to 0644
//! before any byte is written.

use std::fs::{File, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Who may read the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readers {
    /// The owner only (0600): keys, identities.
    Owner,
    /// Everyone (0644): certificates, configs.
    Everyone,
}

pub fn write(path: &Path, contents: &[u8], readers: Readers) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    if readers == Readers::Everyone {
        tmp.as_file()
            .set_permissions(Permissions::from_mode(0o644))?;
    }
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_and_replacing_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
        write(&key, b"new", Readers::Owner).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let cert = dir.path().join("cert.pem");
        write(&cert, b"c", Readers::Everyone).unwrap();
        assert_eq!(
            std::fs::metadata(&cert).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
