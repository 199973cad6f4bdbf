//! Writing command output to stdout without panicking when the reader goes away
//! (e.g. `infadaptd plan ... | head`).

use std::io;

use crate::commands::exit;
use crate::commands::stderr::CommandFailure;

/// Writes a line to stdout; a closed pipe ends the process quietly, other errors with 1.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::commands::output::stdout_failed(error);
        }
    }};
}

/// Ends the process after stdout failed: quietly for a closed pipe, with 1 otherwise.
pub fn stdout_failed(error: io::Error) -> ! {
    if error.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    CommandFailure::new(exit::FAILURE)
        .error(format_args!("cannot write to standard output: {error}"))
        .exit_now()
}
