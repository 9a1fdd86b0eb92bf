//! In-bank symlink resolution: proves that a symlink, followed the way the kernel
//! would follow it, never leaves the bank folder.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::LayoutError;

/// Symlinks followed while resolving one link before giving up. The same bound as
/// Linux's ELOOP limit (40): a link that needs more would not resolve at run time
/// either, and the bound keeps a link cycle from looping forever.
pub(crate) const MAX_SYMLINK_DEPTH: usize = 40;

/// One step of a path being resolved.
enum Step {
    /// `/`: an absolute target.
    Root,
    /// `..`.
    Parent,
    /// A plain name.
    Name(OsString),
}

/// The steps of `path`; `.` components vanish.
fn steps(path: &Path) -> impl Iterator<Item = Step> + '_ {
    path.components().filter_map(|c| match c {
        Component::Prefix(_) | Component::RootDir => Some(Step::Root),
        Component::ParentDir => Some(Step::Parent),
        Component::Normal(name) => Some(Step::Name(name.to_owned())),
        Component::CurDir => None,
    })
}

/// Checks that the symlink at `link` (relative to `bank`, plain names only) resolves
/// inside `bank`: walking its target one component at a time from the link's folder,
/// following every symlink met in the bank (at most [`MAX_SYMLINK_DEPTH`]), a `..`
/// above the bank folder or an absolute target is an escape. A component that does
/// not exist is taken by name, so a link stays refused even if its target appears later.
pub(crate) fn check_symlink(bank: &Path, link: &Path) -> Result<(), LayoutError> {
    let link_path = bank.join(link);
    let target = fs::read_link(&link_path).map_err(LayoutError::at(&link_path))?;
    // The folder the link lives in, as names below the bank.
    let at: Vec<OsString> = match link.parent() {
        Some(parent) => steps(parent)
            .filter_map(|s| match s {
                Step::Name(name) => Some(name),
                Step::Root | Step::Parent => None,
            })
            .collect(),
        None => Vec::new(),
    };
    match walk(bank, at, &target) {
        Ok(_) => Ok(()),
        Err(Walk::Escape(why)) => Err(LayoutError::PathEscape {
            entry: link.to_string_lossy().into_owned(),
            reason: format!("symbolic link to `{}` {why}", target.display()),
        }),
        Err(Walk::Io(e)) => Err(e),
    }
}

/// Resolves `rel` from the bank folder the way the kernel would, following symlinks
/// inside the bank: the resolved path inside the bank, or why it leaves the bank.
pub(crate) fn resolve_in_bank(bank: &Path, rel: &Path) -> Result<PathBuf, Walk> {
    let names = walk(bank, Vec::new(), rel)?;
    Ok(names.iter().fold(bank.to_path_buf(), |p, n| p.join(n)))
}

/// Why a walk inside the bank failed.
#[derive(Debug)]
pub(crate) enum Walk {
    /// The path leaves the bank: the rule it broke.
    Escape(String),
    /// Reading a link failed.
    Io(LayoutError),
}

/// Walks `target` from the folder `at` (names below `bank`), following symlinks met in
/// the bank; returns the names of where it ends.
fn walk(bank: &Path, mut at: Vec<OsString>, target: &Path) -> Result<Vec<OsString>, Walk> {
    let mut pending: VecDeque<Step> = steps(target).collect();
    let mut followed = 0;
    while let Some(step) = pending.pop_front() {
        match step {
            Step::Root => return Err(Walk::Escape("points to an absolute path".into())),
            Step::Parent => {
                if at.pop().is_none() {
                    return Err(Walk::Escape("leads above the bank folder".into()));
                }
            }
            Step::Name(name) => {
                at.push(name);
                let here: PathBuf = at.iter().fold(bank.to_path_buf(), |p, n| p.join(n));
                let is_symlink =
                    fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink());
                if is_symlink {
                    followed += 1;
                    if followed > MAX_SYMLINK_DEPTH {
                        return Err(Walk::Escape(format!(
                            "does not resolve within {MAX_SYMLINK_DEPTH} levels of links"
                        )));
                    }
                    let next =
                        fs::read_link(&here).map_err(|e| Walk::Io(LayoutError::io(&here, e)))?;
                    at.pop();
                    let next: Vec<Step> = steps(&next).collect();
                    for step in next.into_iter().rev() {
                        pending.push_front(step);
                    }
                }
            }
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn verdict(bank: &Path, link: &str) -> Result<(), String> {
        check_symlink(bank, Path::new(link)).map_err(|e| e.to_string())
    }

    #[test]
    fn links_inside_the_bank_pass() {
        let bank = tempfile::tempdir().unwrap();
        let b = bank.path();
        fs::create_dir_all(b.join("lib/x")).unwrap();
        symlink("x", b.join("lib/current")).unwrap();
        symlink("../lib/current/../x/./y", b.join("lib/x/deep")).unwrap();
        symlink(".", b.join("self")).unwrap();
        symlink("does/not/exist", b.join("dangling")).unwrap();
        for link in ["lib/current", "lib/x/deep", "self", "dangling"] {
            assert_eq!(verdict(b, link), Ok(()), "{link}");
        }
    }

    #[test]
    fn absolute_and_upward_targets_escape() {
        let bank = tempfile::tempdir().unwrap();
        let b = bank.path();
        fs::create_dir(b.join("d")).unwrap();
        symlink("/etc", b.join("abs")).unwrap();
        symlink("../../etc", b.join("d/up")).unwrap();
        symlink("missing/../../x", b.join("lexical")).unwrap();
        for link in ["abs", "d/up", "lexical"] {
            let text = verdict(b, link).unwrap_err();
            assert!(text.contains("escapes the bank"), "{text}");
        }
    }

    #[test]
    fn a_chain_through_a_dot_link_escapes() {
        let bank = tempfile::tempdir().unwrap();
        let b = bank.path();
        symlink(".", b.join("s")).unwrap();
        symlink("s/..", b.join("t")).unwrap();
        let text = verdict(b, "t").unwrap_err();
        assert!(text.contains("leads above the bank folder"), "{text}");
    }

    #[test]
    fn a_link_through_another_link_to_outside_escapes() {
        let bank = tempfile::tempdir().unwrap();
        let b = bank.path();
        fs::create_dir(b.join("d")).unwrap();
        symlink("/", b.join("d/root")).unwrap();
        symlink("d/root/etc", b.join("via")).unwrap();
        assert!(verdict(b, "via").unwrap_err().contains("absolute path"));
    }

    #[test]
    fn cycles_stop_at_the_depth_bound() {
        let bank = tempfile::tempdir().unwrap();
        let b = bank.path();
        symlink("b", b.join("a")).unwrap();
        symlink("a", b.join("b")).unwrap();
        let text = verdict(b, "a").unwrap_err();
        assert!(text.contains("40 levels"), "{text}");
    }
}
