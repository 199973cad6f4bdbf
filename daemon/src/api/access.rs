//! Who may change a plan: the bearer token of the API's write endpoints, read from the file
//! `[daemon.http] token_file` names (refused when others may read it), compared in constant
//! time, with refusals logged at most once per [`DENIAL_LOG_INTERVAL`].

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;
use tracing::warn;

/// Least time between two log lines about refused requests.
pub const DENIAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why the token file cannot be used; each message says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error(
        "{} is accessible to its group or others (mode {mode:04o}); the token must be \
         readable by the service user only: chmod 600 it",
        path.display()
    )]
    OpenToOthers { path: PathBuf, mode: u32 },
    #[error("{} holds no token", path.display())]
    Empty { path: PathBuf },
    #[error("{} must hold one token (no spaces or line breaks inside it)", path.display())]
    NotOneToken { path: PathBuf },
}

/// Reads the API token from `path`: a regular file that neither its group nor others may
/// read, write or execute (mode 0600 or stricter), holding one non-empty line.
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    let unreadable = |source| TokenFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let metadata = fs::metadata(path).map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(TokenFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenFileError::OpenToOthers {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(unreadable)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenFileError::NotOneToken {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_owned())
}

/// What a write request was refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `token_file` is configured: the write endpoints are off.
    Disabled,
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that is not the configured one.
    Wrong,
}

/// The write endpoints' access control and where pauses are kept.
#[derive(Debug, Clone, Default)]
pub struct WriteAccess {
    token: Option<Arc<Token>>,
    /// The state directory that keeps the paused pipelines; `None`: not kept.
    state_dir: Option<PathBuf>,
    denials: Arc<Mutex<DenialLog>>,
    /// Serialises the writes of the paused set.
    pub(crate) writing: Arc<tokio::sync::Mutex<()>>,
}

/// The configured token (never printed).
struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Refusals since the last log line.
#[derive(Debug, Default)]
struct DenialLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl WriteAccess {
    /// Writes refused with 403: no token configured.
    pub fn disabled() -> WriteAccess {
        WriteAccess::default()
    }

    /// Writes allowed with `token`; pauses kept in `state_dir` when given.
    pub fn with_token(token: String, state_dir: Option<PathBuf>) -> WriteAccess {
        WriteAccess {
            token: Some(Arc::new(Token(token.into_bytes()))),
            state_dir,
            ..WriteAccess::default()
        }
    }

    /// Where the paused pipelines are kept, if anywhere.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// Checks the `Authorization` header value of a request.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Denied> {
        let Some(token) = &self.token else {
            return Err(Denied::Disabled);
        };
        let Some(given) = authorization.and_then(bearer) else {
            return Err(Denied::Missing);
        };
        // Constant time over the token's bytes; only a difference in length shows early.
        if bool::from(given.ct_eq(&token.0)) {
            Ok(())
        } else {
            Err(Denied::Wrong)
        }
    }

    /// Logs a refused request unless one was logged within [`DENIAL_LOG_INTERVAL`]; the
    /// next line counts those left out.
    pub fn log_denied(&self, denied: Denied, route: &str) {
        let mut log = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if log
            .last
            .is_some_and(|last| now.duration_since(last) < DENIAL_LOG_INTERVAL)
        {
            log.suppressed += 1;
            return;
        }
        let why = match denied {
            Denied::Disabled => "write endpoints disabled (no token_file)",
            Denied::Missing => "no bearer token",
            Denied::Wrong => "wrong bearer token",
        };
        warn!(
            route,
            reason = why,
            not_logged_since = log.suppressed,
            "API write request refused"
        );
        log.last = Some(now);
        log.suppressed = 0;
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let access = WriteAccess::with_token("s3cret-token".to_owned(), None);
        assert_eq!(access.check(Some(b"Bearer s3cret-token")), Ok(()));
        assert_eq!(access.check(Some(b"bearer s3cret-token")), Ok(()));
        assert_eq!(
            access.check(Some(b"Bearer s3cret-tokeN")),
            Err(Denied::Wrong)
        );
        assert_eq!(access.check(Some(b"Bearer s3cret")), Err(Denied::Wrong));
        assert_eq!(
            access.check(Some(b"Basic s3cret-token")),
            Err(Denied::Missing)
        );
        assert_eq!(access.check(Some(b"Bearer ")), Err(Denied::Missing));
        assert_eq!(access.check(None), Err(Denied::Missing));
        assert_eq!(
            WriteAccess::disabled().check(Some(b"Bearer s3cret-token")),
            Err(Denied::Disabled)
        );
        assert!(!format!("{access:?}").contains("s3cret"));
    }

    #[test]
    fn a_token_file_others_may_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("infadaptd-token-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        fs::write(&path, "abc123\n").expect("write");
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let read = read_token_file(&path);
            assert_eq!(read.is_ok(), ok, "{mode:o}: {read:?}");
            if ok {
                assert_eq!(read.as_deref().ok(), Some("abc123"));
            } else {
                let message = read.expect_err("refused");
                assert!(message.to_string().contains("chmod 600"), "{message}");
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(&path, "  \n").expect("write");
        assert!(read_token_file(&path).is_err_and(|m| m.to_string().contains("holds no token")));
        fs::write(&path, "two words\n").expect("write");
        assert!(read_token_file(&path).is_err_and(|m| m.to_string().contains("one token")));
        assert!(
            read_token_file(&dir.join("missing"))
                .is_err_and(|m| m.to_string().contains("cannot read"))
        );
        let _ = fs::remove_dir_all(dir);
    }
}
