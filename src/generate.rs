//! `guardian generate` (hidden): shell completions and man pages, made from the clap
//! definition itself so that neither can drift from `--help`. The Debian package's build
//! (`packaging/build-deb`) runs it; nobody needs it on a host.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use clap_complete::Shell;

#[derive(Subcommand)]
pub enum GenerateCommand {
    /// Prints the completion script for a shell to standard output.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Writes the man pages into a directory (created if missing): guardian.1, and one page per
    /// subcommand (guardian-run.1, guardian-audit-verify.1, ...), as `man guardian-run` finds
    /// them.
    Man {
        /// Where to write the pages.
        dir: PathBuf,
    },
}

/// Carries out `command` for `cli`, the whole command line's definition.
pub fn run(command: &GenerateCommand, mut cli: clap::Command) -> Result<u8> {
    match command {
        GenerateCommand::Completions { shell } => {
            // Into memory first: clap_complete panics on a closed pipe (`... | head`), and
            // `write_out` ends the command quietly instead.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cli, "guardian", &mut script);
            crate::write_out(&String::from_utf8_lossy(&script));
        }
        GenerateCommand::Man { dir } => {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cli, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Every command a user can type has its page, and the hidden `generate` has none.
    #[test]
    fn man_pages_cover_each_visible_subcommand_and_not_generate() {
        let dir = tempfile::tempdir().unwrap();
        let man = GenerateCommand::Man {
            dir: dir.path().join("man1"),
        };
        assert_eq!(run(&man, crate::Cli::command()).unwrap(), 0);
        let pages: Vec<String> = fs::read_dir(dir.path().join("man1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        for sub in crate::Cli::command().get_subcommands() {
            let page = format!("guardian-{}.1", sub.get_name());
            assert_eq!(pages.contains(&page), !sub.is_hide_set(), "{page}");
        }
        assert!(pages.contains(&"guardian.1".to_string()));
    }
}
