//! Process exit codes shared by every command.

/// Success.
pub const OK: u8 = 0;
/// A runtime failure (IO, a backend, an internal error).
pub const FAILURE: u8 = 1;
/// The input was valid but the problem it states has no solution (e.g. an infeasible plan).
pub const INFEASIBLE: u8 = 2;
/// The input file or command line was malformed (EX_USAGE from sysexits.h).
pub const USAGE: u8 = 64;
