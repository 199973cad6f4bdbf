//! `infadaptd generate-assets DIR` (the package build's helper, parsed apart from the public
//! command line so that nothing it writes offers it): writes the man pages and the bash, zsh
//! and fish completions, all generated from the command-line definition.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use crate::commands::cli::Cli;
use crate::outln;

#[derive(Debug, Args)]
pub struct AssetsArgs {
    /// Directory to write into: `man/` gets one page per command, `completions/` one file
    /// per shell. Created when missing; files there are overwritten.
    #[arg(value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// The shells completions are written for, with their file names (the names each shell's
/// vendor completion directory expects).
pub const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "infadaptd"),
    (Shell::Zsh, "_infadaptd"),
    (Shell::Fish, "infadaptd.fish"),
];

pub fn run(args: &AssetsArgs) -> anyhow::Result<()> {
    let written = write_assets(&args.out_dir)?;
    for path in written {
        outln!("{}", path.display());
    }
    Ok(())
}

/// Writes the man pages to `out_dir/man` and the completions to `out_dir/completions`;
/// returns the files written, sorted.
pub fn write_assets(out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let man_dir = out_dir.join("man");
    let completion_dir = out_dir.join("completions");
    for dir in [&man_dir, &completion_dir] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let mut written = Vec::new();
    write_man_pages(Cli::command(), &man_dir, &mut written)?;
    for (shell, file_name) in COMPLETIONS {
        let path = completion_dir.join(file_name);
        fs::write(&path, crate::commands::completions::script(shell))
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

/// One page for `command` (`infadaptd.1`, `infadaptd-run.1`, `infadaptd-profiles-import.1`,
/// ...) and, recursively, for each of its visible subcommands (hidden developer commands
/// such as `profiles synth` get none). The top-level page also
/// gets FILES, SIGNALS, EXIT STATUS and SEE ALSO sections.
fn write_man_pages(
    command: clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let is_top_level = command.get_name() == "infadaptd";
    let mut command = command.disable_help_subcommand(true);
    if is_top_level {
        command = command.long_about(TOP_LEVEL_DESCRIPTION);
    }
    command.build();
    let page_name = command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
        .to_owned();
    for sub in command.get_subcommands() {
        if !sub.is_hide_set() {
            write_man_pages(sub.clone(), dir, written)?;
        }
    }
    let path = dir.join(format!("{page_name}.1"));
    let page = render_man_page(command, is_top_level)
        .with_context(|| format!("cannot render the man page {page_name}"))?;
    fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    Ok(())
}

const TOP_LEVEL_DESCRIPTION: &str = "Autoscaler for model-serving pipelines on one host. Every \
control period it observes each pipeline through its backend plugin, forecasts the load, \
chooses per stage the model variant (or a mix of variants), batch size, cores per replica \
and replica count that keep the end-to-end latency under the SLO at the best accuracy for \
the cost, damps the change so that it does not flap, and applies it. Run as a service with \
`infadaptd run`; check a configuration with `infadaptd validate`.";

/// The extra sections of the top-level page: (title, paragraphs).
const TOP_LEVEL_SECTIONS: [(&str, &[&str]); 4] = [
    (
        "FILES",
        &[
            "/etc/infadaptd/infadaptd.toml: the configuration (pipelines, backends, HTTP API).",
            "/etc/infadaptd/catalogs/: measured profiles the configuration refers to.",
            "/usr/lib/infadaptd/plugins/: backend plugins, libinfadapt_plugin_NAME.so.",
            "/var/lib/infadaptd/: state per pipeline (last applied plan, forecaster); \
             $STATE_DIRECTORY wins.",
        ],
    ),
    (
        "SIGNALS",
        &[
            "SIGHUP: re-read and validate the configuration; restart only the pipelines whose \
             configuration changed; a broken file is logged and the running configuration stays.",
            "SIGTERM, SIGINT: finish the tick in flight, save state and exit 0; a second \
             signal exits at once.",
        ],
    ),
    (
        "EXIT STATUS",
        &[
            "0: success. 1: runtime failure. 2: infeasible planning problem. 64: malformed \
             input, every problem listed as file:line:col: field: message.",
        ],
    ),
    (
        "SEE ALSO",
        &["systemctl(1), journalctl(1), systemd.service(5)"],
    ),
];

/// The CONFIGURATION section of the top-level page: every key from the configuration
/// reference, the validator's own source of keys and ranges.
fn configuration_section(roff: &mut clap_mangen::roff::Roff) {
    use clap_mangen::roff::{bold, roman};
    roff.control("SH", ["CONFIGURATION"]);
    roff.control("PP", []);
    roff.text([roman(
        "Every key of the configuration file, with its type, default and range (also in \
         docs/configuration.md). The keys of [pipeline.backend] other than type belong to the \
         backend, which checks them itself.",
    )]);
    for (table, keys) in crate::config::reference::by_table() {
        roff.control("SS", [table.as_str()]);
        for key in keys {
            roff.control("TP", []);
            roff.text([bold(key.name()), roman(format!(" ({})", key.summary()))]);
            roff.text([roman(key.doc.replace('`', ""))]);
        }
    }
}

fn render_man_page(command: clap::Command, is_top_level: bool) -> std::io::Result<Vec<u8>> {
    use clap_mangen::roff::{Roff, roman};
    let has_options = command.get_arguments().any(|a| !a.is_hide_set());
    let has_subcommands = command.get_subcommands().any(|s| !s.is_hide_set());
    let has_version = command.get_version().is_some();
    let man = clap_mangen::Man::new(command);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if has_options {
        man.render_options_section(&mut page)?;
    }
    if has_subcommands {
        man.render_subcommands_section(&mut page)?;
    }
    if is_top_level {
        let mut roff = Roff::new();
        for (title, paragraphs) in TOP_LEVEL_SECTIONS {
            roff.control("SH", [title]);
            for paragraph in paragraphs {
                roff.control("PP", []);
                roff.text([roman(*paragraph)]);
            }
        }
        configuration_section(&mut roff);
        roff.to_writer(&mut page)?;
    }
    if has_version {
        man.render_version_section(&mut page)?;
    }
    Ok(page)
}
