//! Scratch directories under the system's temporary directory, one per test process and
//! name.

use std::path::{Path, PathBuf};

/// An empty directory `infadapt-PREFIX-PID-NAME` under the temporary directory: removed
/// first if an earlier run left it, then created. It stays after the test (for a look at
/// what a failed test wrote); use [`Scratch`] for one removed at the end.
pub fn scratch_dir(prefix: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infadapt-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("scratch dir {}: {e}", dir.display()));
    dir
}

/// A [`scratch_dir`] that is removed with everything in it when the value is dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates the empty directory `infadapt-PREFIX-PID-NAME` (see [`scratch_dir`]).
    pub fn new(prefix: &str, name: &str) -> Scratch {
        Scratch {
            dir: scratch_dir(prefix, name),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `name` inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dir_is_empty_and_scratch_is_removed_on_drop() {
        let dir = scratch_dir("testkit", "empty");
        std::fs::write(dir.join("f"), "x").expect("write");
        let again = scratch_dir("testkit", "empty");
        assert_eq!(dir, again);
        assert_eq!(std::fs::read_dir(&again).expect("read").count(), 0);
        std::fs::remove_dir_all(&again).expect("remove");

        let path = {
            let scratch = Scratch::new("testkit", "guard");
            std::fs::write(scratch.join("f"), "x").expect("write");
            scratch.path().to_path_buf()
        };
        assert!(!path.exists());
    }
}
