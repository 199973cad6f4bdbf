//! A backend as the control loop sees it: the synchronous plugin interface called from the
//! blocking pool with a timeout, so that a slow or hung backend stalls only its pipeline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use infadapt_plugin_abi::{BackendError, BackendInstance};
use thiserror::Error;

/// Why a backend call failed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum BackendCallError {
    /// The backend answered with an error.
    #[error("{what} failed (code {code}): {message}")]
    Failed {
        what: &'static str,
        code: i32,
        message: String,
    },
    /// The call did not return in time; it may still be running.
    #[error("{what} timed out after {seconds:.1} s")]
    TimedOut { what: &'static str, seconds: f64 },
    /// An earlier call that timed out is still running.
    #[error("{what} skipped: an earlier call is still running")]
    Busy { what: &'static str },
    /// The call panicked.
    #[error("{what} panicked")]
    Panicked { what: &'static str },
}

/// A backend instance shared with the blocking pool.
#[derive(Clone)]
pub struct BackendHandle {
    name: String,
    inner: Arc<Mutex<Box<dyn BackendInstance>>>,
    timeout: Duration,
}

impl std::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendHandle")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl BackendHandle {
    pub fn new(name: String, instance: Box<dyn BackendInstance>, timeout: Duration) -> Self {
        BackendHandle {
            name,
            inner: Arc::new(Mutex::new(instance)),
            timeout,
        }
    }

    /// The backend's name (its `type`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `call` on the instance in the blocking pool, bounded by the timeout.
    pub async fn call<R: Send + 'static>(
        &self,
        what: &'static str,
        call: impl FnOnce(&mut dyn BackendInstance) -> Result<R, BackendError> + Send + 'static,
    ) -> Result<R, BackendCallError> {
        let inner = Arc::clone(&self.inner);
        let task = tokio::task::spawn_blocking(move || {
            let mut guard = match inner.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::WouldBlock) => return Err(None),
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            };
            call(guard.as_mut()).map_err(Some)
        });
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(BackendCallError::TimedOut {
                what,
                seconds: self.timeout.as_secs_f64(),
            }),
            Ok(Err(_)) => Err(BackendCallError::Panicked { what }),
            Ok(Ok(Err(None))) => Err(BackendCallError::Busy { what }),
            Ok(Ok(Err(Some(e)))) => Err(BackendCallError::Failed {
                what,
                code: e.code,
                message: e.message,
            }),
            Ok(Ok(Ok(value))) => Ok(value),
        }
    }
}
