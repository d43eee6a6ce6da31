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
    write_with(path, readers, |file| file.write_all(contents))
}

/// Like [`write`] for contents made piece by piece (an export streamed page
/// by page): `fill` writes into the temporary file, which replaces `path`
/// only if `fill` returns `Ok`; on an error it is removed and `path` is left
/// as it was. `fill` flushes any buffer it wraps the file in.
pub fn write_with<T, E: From<io::Error>>(
    path: &Path,
    readers: Readers,
    fill: impl FnOnce(&mut File) -> Result<T, E>,
) -> Result<T, E> {
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
    let made = fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    Ok(made)
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

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export");
        std::fs::write(&path, "old").unwrap();
        let failed = write_with(&path, Readers::Owner, |file| {
            file.write_all(b"half of a new")?;
            Err::<(), _>(io::Error::other("the source went away"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_with(&path, Readers::Owner, |file| {
            file.write_all(b"new, ")?;
            file.write_all(b"in pieces")
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new, in pieces");
    }
}
