//! The one printer of what a command tells the user on stderr (errors with or without the
//! file they are about, warnings, hint lines, a file's diagnostics) and of the exit code a
//! failed command ends with.
//!
//! A command that fails returns a [`CommandFailure`] (through `anyhow`, so that `?` keeps
//! working for its other errors: `bail!(CommandFailure::usage().error(...))`); any other
//! error is a runtime failure, `error: CAUSE: CAUSE…` with exit 1. [`finish`] prints either
//! and gives the exit code. Warnings do not end a command and are printed at once
//! ([`warning`], [`warning_in`]).

use std::fmt;
use std::io::Write as _;

use crate::commands::exit;
use crate::config::tomlread::Diagnostics;

/// One thing told to the user on stderr; its `Display` is the text, without the newline.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// `error: MESSAGE`, or `error: FILE: MESSAGE`.
    Error {
        file: Option<String>,
        message: String,
    },
    /// `FILE: MESSAGE`, or `MESSAGE` alone: a problem stated without the `error:` label.
    Unlabelled {
        file: Option<String>,
        message: String,
    },
    /// `warning: MESSAGE`, or `FILE: warning: MESSAGE`.
    Warning {
        file: Option<String>,
        message: String,
    },
    /// `  MESSAGE`: a hint under the error before it.
    Hint(String),
    /// A file's diagnostics, one `FILE:LINE:COL: [FIELD: ]MESSAGE` line each.
    Diagnostics(Diagnostics),
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Error {
                file: None,
                message,
            } => write!(f, "error: {message}"),
            Line::Error {
                file: Some(file),
                message,
            } => write!(f, "error: {file}: {message}"),
            Line::Unlabelled {
                file: None,
                message,
            } => write!(f, "{message}"),
            Line::Unlabelled {
                file: Some(file),
                message,
            } => write!(f, "{file}: {message}"),
            Line::Warning {
                file: None,
                message,
            } => write!(f, "warning: {message}"),
            Line::Warning {
                file: Some(file),
                message,
            } => write!(f, "{file}: warning: {message}"),
            Line::Hint(message) => write!(f, "  {message}"),
            Line::Diagnostics(diagnostics) => write!(f, "{diagnostics}"),
        }
    }
}

/// Writes lines to stderr. A stderr that cannot be written leaves nothing else to tell.
fn print<'a>(lines: impl IntoIterator<Item = &'a Line>) {
    let mut stderr = std::io::stderr().lock();
    for line in lines {
        let _ = writeln!(stderr, "{line}");
    }
}

/// Prints `warning: MESSAGE`.
pub fn warning(message: impl fmt::Display) {
    print([&Line::Warning {
        file: None,
        message: message.to_string(),
    }]);
}

/// Prints `FILE: warning: MESSAGE`.
pub fn warning_in(file: impl fmt::Display, message: impl fmt::Display) {
    print([&Line::Warning {
        file: Some(file.to_string()),
        message: message.to_string(),
    }]);
}

/// How a command failed: what the user is told, and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFailure {
    code: u8,
    lines: Vec<Line>,
}

impl CommandFailure {
    /// A failure with this exit code ([`exit`]) and nothing said yet.
    pub fn new(code: u8) -> Self {
        Self {
            code,
            lines: Vec::new(),
        }
    }

    /// The input (a file or the command line) is malformed: exit 64.
    pub fn usage() -> Self {
        Self::new(exit::USAGE)
    }

    /// The input is valid but the problem it states has no solution: exit 2.
    pub fn infeasible() -> Self {
        Self::new(exit::INFEASIBLE)
    }

    /// A runtime failure: `error: ` and the error with its causes, exit 1.
    pub fn runtime(error: &anyhow::Error) -> Self {
        Self::new(exit::FAILURE).error(format_args!("{error:#}"))
    }

    /// The failure `error` carries, or a runtime failure ([`CommandFailure::runtime`]).
    pub fn of(error: anyhow::Error) -> Self {
        match error.downcast::<CommandFailure>() {
            Ok(failure) => failure,
            Err(error) => Self::runtime(&error),
        }
    }

    /// Adds `error: MESSAGE`.
    pub fn error(mut self, message: impl fmt::Display) -> Self {
        self.lines.push(Line::Error {
            file: None,
            message: message.to_string(),
        });
        self
    }

    /// Adds `error: FILE: MESSAGE`.
    pub fn error_in(mut self, file: impl fmt::Display, message: impl fmt::Display) -> Self {
        self.lines.push(Line::Error {
            file: Some(file.to_string()),
            message: message.to_string(),
        });
        self
    }

    /// Adds `MESSAGE` without the `error:` label.
    pub fn unlabelled(mut self, message: impl fmt::Display) -> Self {
        self.lines.push(Line::Unlabelled {
            file: None,
            message: message.to_string(),
        });
        self
    }

    /// Adds `FILE: MESSAGE` without the `error:` label.
    pub fn unlabelled_in(mut self, file: impl fmt::Display, message: impl fmt::Display) -> Self {
        self.lines.push(Line::Unlabelled {
            file: Some(file.to_string()),
            message: message.to_string(),
        });
        self
    }

    /// Adds `  MESSAGE`, a hint under the line before.
    pub fn hint(mut self, message: impl fmt::Display) -> Self {
        self.lines.push(Line::Hint(message.to_string()));
        self
    }

    /// Adds every diagnostic of a file, one line each.
    pub fn diagnostics(mut self, diagnostics: &Diagnostics) -> Self {
        self.lines.push(Line::Diagnostics(diagnostics.clone()));
        self
    }

    /// Adds `error: N problem(s) in FILE`, the count of a file's diagnostics.
    pub fn problem_count(self, diagnostics: &Diagnostics) -> Self {
        let count = diagnostics.items.len();
        self.error(format_args!("{count} problem(s) in {}", diagnostics.file))
    }

    /// The exit code the command ends with.
    pub fn code(&self) -> u8 {
        self.code
    }

    /// Prints what the user is told, and gives the exit code.
    pub fn report(&self) -> u8 {
        print(&self.lines);
        self.code
    }

    /// Prints what the user is told and ends the process at once, for where a command cannot
    /// return its failure (a failed stdout, deep in its output).
    pub fn exit_now(&self) -> ! {
        std::process::exit(self.report().into())
    }
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandFailure {}

/// Reports a command's outcome and gives the process exit code: 0, or the failure's code
/// after printing it ([`CommandFailure::of`]).
pub fn finish(outcome: anyhow::Result<()>) -> u8 {
    match outcome {
        Ok(()) => exit::OK,
        Err(error) => CommandFailure::of(error).report(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tomlread::Diagnostic;

    fn diagnostics() -> Diagnostics {
        Diagnostics {
            file: "p.toml".into(),
            items: vec![
                Diagnostic {
                    line: 3,
                    column: 7,
                    field: "pipeline.slo_ms".into(),
                    message: "must be > 0".into(),
                },
                Diagnostic {
                    line: 1,
                    column: 1,
                    field: String::new(),
                    message: "cannot read: gone".into(),
                },
            ],
        }
    }

    #[test]
    fn an_error_names_its_file_after_the_label() {
        let bare = CommandFailure::usage().error("--load must be a finite number >= 0");
        assert_eq!(
            bare.to_string(),
            "error: --load must be a finite number >= 0"
        );
        let in_file = CommandFailure::usage().error_in("p.toml", "no stage");
        assert_eq!(in_file.to_string(), "error: p.toml: no stage");
    }

    #[test]
    fn a_warning_names_its_file_before_the_label() {
        let bare = Line::Warning {
            file: None,
            message: "skipped a row".into(),
        };
        assert_eq!(bare.to_string(), "warning: skipped a row");
        let in_file = Line::Warning {
            file: Some("d.toml".into()),
            message: "plugin not found".into(),
        };
        assert_eq!(in_file.to_string(), "d.toml: warning: plugin not found");
    }

    #[test]
    fn unlabelled_lines_and_hints_are_printed_as_given() {
        let failure = CommandFailure::infeasible()
            .error_in("p.toml", "no feasible plan: SLO too tight")
            .hint("closest feasible: the lowest reachable latency is 12.5 ms")
            .unlabelled_in("d.toml", "the HTTP API is off")
            .unlabelled("`a b` is not a pipeline name");
        assert_eq!(
            failure.to_string(),
            "error: p.toml: no feasible plan: SLO too tight\n  \
             closest feasible: the lowest reachable latency is 12.5 ms\n\
             d.toml: the HTTP API is off\n\
             `a b` is not a pipeline name"
        );
        assert_eq!(failure.code(), exit::INFEASIBLE);
    }

    #[test]
    fn diagnostics_are_one_line_each_and_can_be_counted() {
        let failure = CommandFailure::usage()
            .diagnostics(&diagnostics())
            .problem_count(&diagnostics());
        assert_eq!(
            failure.to_string(),
            "p.toml:3:7: pipeline.slo_ms: must be > 0\n\
             p.toml:1:1: cannot read: gone\n\
             error: 2 problem(s) in p.toml"
        );
        assert_eq!(failure.code(), exit::USAGE);
    }

    #[test]
    fn a_failure_keeps_its_code_through_anyhow() {
        fn command() -> anyhow::Result<()> {
            anyhow::bail!(CommandFailure::usage().error("bad"))
        }
        let failure = CommandFailure::of(command().unwrap_err());
        assert_eq!(failure, CommandFailure::usage().error("bad"));
        assert_eq!(finish(command()), exit::USAGE);
        assert_eq!(finish(Ok(())), exit::OK);
    }

    #[test]
    fn any_other_error_is_a_runtime_failure_with_its_causes() {
        let error = anyhow::anyhow!("disk full").context("cannot write out.toml");
        let failure = CommandFailure::of(error);
        assert_eq!(failure.code(), exit::FAILURE);
        assert_eq!(
            failure.to_string(),
            "error: cannot write out.toml: disk full"
        );
    }
}
