//! The trust check before a plugin file is mapped: owner and mode of the file, read from
//! the open descriptor, and of every directory on its path; no link out of its directory.

use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A plugin file opened for loading: its canonical path and the open file the checks were
/// made on (loaded through `/proc/self/fd`, so the file mapped is the file checked).
pub(super) struct TrustedFile {
    pub(super) canonical: PathBuf,
    pub(super) file: std::fs::File,
}

/// Checks a plugin file and the whole path to it, then opens it without following a
/// symbolic link. Refused: a file that is not a regular file, is group- or world-writable
/// or is owned by anyone but `allowed_owners`; a file that a symbolic link leads to
/// outside the directory it was found in; any directory on the way from `/` that is owned
/// by someone else or is group- or world-writable without the sticky bit (anyone who can
/// rename entries there could swap the plugin). Ownership and mode are read from the open
/// file, so a file replaced after the path checks is not the one loaded.
pub(super) fn open_trusted(path: &Path, allowed_owners: &[u32]) -> Result<TrustedFile, HostError> {
    use std::os::unix::fs::OpenOptionsExt;

    let metadata_error = |source| HostError::Metadata {
        path: path.to_owned(),
        source,
    };
    let canonical = path.canonicalize().map_err(metadata_error)?;
    let refuse = |reason: String| HostError::Unsafe {
        path: path.to_owned(),
        reason,
    };
    let owners = || {
        allowed_owners
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let found_in = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .canonicalize()
        .map_err(metadata_error)?;
    if canonical.parent() != Some(found_in.as_path()) {
        return Err(refuse(format!(
            "it is a symbolic link to {}, outside its directory {}; install the file itself there",
            canonical.display(),
            found_in.display()
        )));
    }
    for dir in canonical.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(metadata_error)?;
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(refuse(format!(
                "the directory {} on its path is group- or world-writable (mode {:o}); run `chmod go-w` on it",
                dir.display(),
                mode & 0o7777
            )));
        }
        if meta.uid() != 0 && !allowed_owners.contains(&meta.uid()) {
            return Err(refuse(format!(
                "the directory {} on its path is owned by uid {}, not by uid {} (root or the service user)",
                dir.display(),
                meta.uid(),
                owners()
            )));
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&canonical)
        .map_err(metadata_error)?;
    let meta = file.metadata().map_err(metadata_error)?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "the file is group- or world-writable (mode {:o}); run `chmod go-w` on it",
            mode & 0o7777
        )));
    }
    if !allowed_owners.contains(&meta.uid()) {
        return Err(refuse(format!(
            "the file is owned by uid {}, not by uid {} (root or the service user)",
            meta.uid(),
            owners()
        )));
    }
    Ok(TrustedFile { canonical, file })
}
