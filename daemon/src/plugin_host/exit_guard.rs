//! Keeps plugin code from ending the process quietly, and the process from waiting on a
//! plugin to end: an `exit()` called from plugin code (the daemon's own exits are marked
//! first) becomes exit status [`PLUGIN_EXIT_STATUS`] with a message, so a service manager
//! that restarts on failure restarts the daemon; and [`exit_process`] ends the process at
//! once while a library is still being mapped, since the C library's exit waits for the
//! loader lock that a slow plugin initialiser holds.

use std::io::Write;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The exit status when plugin code calls `exit()` (EX_SOFTWARE from sysexits.h).
pub const PLUGIN_EXIT_STATUS: i32 = 70;

/// Set once the daemon itself is ending the process.
static EXIT_EXPECTED: AtomicBool = AtomicBool::new(false);

/// Libraries being mapped right now (their initialisers may be running).
static LOADS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts a library being mapped while it lives.
pub(super) struct LoadInFlight(());

impl LoadInFlight {
    pub(super) fn enter() -> LoadInFlight {
        LOADS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        LoadInFlight(())
    }
}

impl Drop for LoadInFlight {
    fn drop(&mut self) {
        LOADS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a library is being mapped right now.
pub fn loads_in_flight() -> usize {
    LOADS_IN_FLIGHT.load(Ordering::SeqCst)
}

/// Registers the exit hook (once; the binary does so at start, before any plugin is
/// loaded: programs that use the library, tests among them, keep their own exits).
pub fn guard_exits() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        if !super::ffi::register_exit_hook(on_exit) {
            tracing::warn!("could not register the exit hook; a plugin calling exit() would end the daemon with its own status");
        }
    });
}

/// Runs inside `exit()`: when the daemon did not ask for it, plugin code did.
extern "C" fn on_exit() {
    if EXIT_EXPECTED.load(Ordering::SeqCst) {
        return;
    }
    let _ = writeln!(
        std::io::stderr(),
        "infadaptd: plugin code called exit(); the daemon did not ask to stop, so it exits with status {PLUGIN_EXIT_STATUS} (a failure) for the service manager to restart it"
    );
    super::ffi::exit_at_once(PLUGIN_EXIT_STATUS)
}

/// Ends the process with `code`: marks the exit as the daemon's own, then exits normally,
/// or, while a plugin initialiser is still running, flushes the standard streams and ends
/// the process at once (a normal exit would wait for the initialiser).
pub fn exit_process(code: u8) -> ! {
    EXIT_EXPECTED.store(true, Ordering::SeqCst);
    if loads_in_flight() > 0 {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        super::ffi::exit_at_once(i32::from(code))
    }
    std::process::exit(i32::from(code))
}
