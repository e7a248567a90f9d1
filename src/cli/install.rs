//! `leakspy completions SHELL` and `leakspy man`: what a package or a user installs next to the
//! binary. Both are generated at run time from the binary's own command-line definition
//! (`super::Cli`), so a pip wheel, a static binary and `cargo install` all carry them without a
//! build step, and they always describe the options of the binary that prints them.

use super::Cli;
use crate::error::LeakspyError;
use crate::output::files::{Destination, write_output};
use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete in. The README says where each shell looks for the script.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write one page per command into DIR (leakspy.1, leakspy-snapshot.1, ...) instead of
    /// printing leakspy.1 on stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Man pages are read by every user of the machine: world-readable, unlike a census.
const MAN_PAGE_MODE: u32 = 0o644;

pub fn run_completions(args: CompletionsArgs) -> Result<(), LeakspyError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "leakspy", &mut script);
    write_output(&Destination::Stdout, &script, None)?;
    Ok(())
}

pub fn run_man(args: ManArgs) -> Result<(), LeakspyError> {
    let pages = man_pages()?;
    match args.dir {
        None => {
            // The first page is the top-level one.
            let (_, page) = pages.first().context("no man page was rendered")?;
            write_output(&Destination::Stdout, page, None)?;
        }
        Some(dir) => {
            for (name, page) in &pages {
                write_output(&Destination::File(dir.join(name)), page, Some(MAN_PAGE_MODE))?;
            }
        }
    }
    Ok(())
}

/// Every man page, named as `man` looks for it: the top-level command's first, then one per
/// subcommand (`leakspy-snapshot.1`), as git and cargo ship theirs.
fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    // `help` is clap's own subcommand, not one of leakspy's commands: no page of its own.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    collect_pages(&command, &mut pages)?;
    Ok(pages)
}

fn collect_pages(command: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render(&mut page).with_context(|| format!("rendering the man page of {}", command.get_name()))?;
    pages.push((page_name(&man), page));
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_pages(sub, pages)?;
    }
    Ok(())
}

/// The file name of a page: only its last component, so that nothing in a name can place a file
/// outside the directory asked for.
fn page_name(man: &clap_mangen::Man) -> String {
    let name = man.get_filename();
    Path::new(&name).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_command_named_as_man_finds_it() {
        let pages = man_pages().unwrap_or_default();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"leakspy.1"));
        for command in ["snapshot", "attach", "why", "completions", "man"] {
            assert!(names.contains(&format!("leakspy-{command}.1").as_str()), "{names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        // The snapshot page documents its options from the same definition that parses them.
        let snapshot =
            pages.iter().find(|(n, _)| n == "leakspy-snapshot.1").map(|(_, p)| p.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&snapshot);
        assert!(text.contains("pid\\-file") && text.contains("max\\-objects"), "{text}");
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::Elvish, Shell::PowerShell] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "leakspy", &mut script);
            let text = String::from_utf8_lossy(&script);
            assert!(text.contains("snapshot") && text.contains("pid-file"), "{shell}: {text}");
        }
    }
}
