//! Several guardians, one revert: when guardians beside each host of a service share a git
//! remote, the push of a change's revert is the lease on remedying it. The first push wins;
//! a guardian whose push is refused fetches the branch, and when a revert of the same commits
//! is already there it drops its own, moves its clone to the remote's and stands down
//! (`daemon::actions::revert` then runs its own host's hook on that revert).

use std::collections::BTreeSet;
use std::time::Duration;

use super::command::Session;
use super::read::is_full_sha;
use super::{validate_word, CommandRecord, GitError, Repo, TRAILER_CHANGE, TRAILER_REVERT_OF};

/// Another guardian's revert found on the remote: its commit and the change it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRevert {
    pub commit: String,
    /// Its `Guardian-Change` trailer: the other guardian's id for the change.
    pub change: Option<String>,
}

/// What looking at the remote came to, with the commands it ran.
#[derive(Debug)]
pub struct Lease {
    /// The revert of the same commits already on the remote, if there is one; when there is,
    /// this clone's branch is now the remote's.
    pub taken_by: Option<RemoteRevert>,
    pub commands: Vec<CommandRecord>,
}

impl Repo {
    /// After this clone's revert `own` could not be pushed: fetches `remote`'s `branch` and
    /// looks there, among the commits this clone lacks, for a revert of every commit `own`
    /// reverts. When one is there and `own` is the only commit the remote lacks, moves the
    /// branch to the remote's (`git reset --keep`: refused by git rather than lose anything).
    /// The remote may be a name or a URL.
    pub fn yield_to_remote_revert(
        &self,
        remote: &str,
        branch: &str,
        own: &str,
        timeout: Duration,
    ) -> Result<Lease, GitError> {
        validate_word("remote", remote).map_err(GitError::InvalidRequest)?;
        validate_word("branch", branch).map_err(GitError::InvalidRequest)?;
        let mut s = Session::new(self);
        self.check_config(&mut s)?;
        let found = yield_in(&mut s, remote, branch, own, timeout);
        let commands = std::mem::take(&mut s.log);
        found.map(|taken_by| Lease { taken_by, commands })
    }
}

fn yield_in(
    s: &mut Session<'_>,
    remote: &str,
    branch: &str,
    own: &str,
    timeout: Duration,
) -> Result<Option<RemoteRevert>, GitError> {
    let refspec = format!("refs/heads/{branch}");
    let fetch = [
        "fetch",
        "--quiet",
        "--no-tags",
        "--",
        remote,
        refspec.as_str(),
    ];
    let raw = s.run(fetch, None, timeout)?;
    if !raw.success() {
        return Err(s.failed(fetch, &raw));
    }
    let tip = s.resolve("FETCH_HEAD")?;
    let wanted = reverted_by(s, own)?;
    if wanted.is_empty() {
        return Ok(None);
    }
    // The commits the remote has and this clone lacks, newest first.
    let format = format!(
        "--format=%H%x1f%(trailers:key={TRAILER_REVERT_OF},valueonly,separator=%x1e)%x1f\
         %(trailers:key={TRAILER_CHANGE},valueonly)"
    );
    let not_here = format!("^{own}");
    let log = [
        "log",
        "-z",
        format.as_str(),
        tip.as_str(),
        not_here.as_str(),
        "--",
    ];
    let out = s.ok(log, None)?;
    let theirs = out.split('\0').find_map(|record| {
        let mut fields = record.split('\u{1f}');
        let commit = fields.next()?.trim();
        let reverts: BTreeSet<&str> = fields.next()?.split('\u{1e}').map(str::trim).collect();
        let change = fields.next().map(str::trim).filter(|c| !c.is_empty());
        (is_full_sha(commit) && wanted.iter().all(|w| reverts.contains(w.as_str()))).then(|| {
            RemoteRevert {
                commit: commit.to_owned(),
                change: change.map(str::to_owned),
            }
        })
    });
    let Some(theirs) = theirs else {
        return Ok(None);
    };
    // Only this guardian's own revert may be dropped: anything else the remote lacks is
    // someone's work, and a person decides.
    let range = format!("{tip}..HEAD");
    let ahead = s.ok(["rev-list", range.as_str(), "--"], None)?;
    let ahead: Vec<&str> = ahead.split_whitespace().collect();
    if ahead != [own] {
        return Err(GitError::InvalidRequest(format!(
            "the remote already has {}, a revert of the same change, but this clone has {} \
             commit(s) the remote lacks besides its own revert: a person must reconcile them",
            theirs.commit,
            ahead.len().saturating_sub(1)
        )));
    }
    s.ok(["reset", "--quiet", "--keep", tip.as_str()], None)?;
    Ok(Some(theirs))
}

/// The commits `revert` says it reverts (its `Guardian-Revert-Of` trailers).
fn reverted_by(s: &mut Session<'_>, revert: &str) -> Result<Vec<String>, GitError> {
    let format = format!("--format=%(trailers:key={TRAILER_REVERT_OF},valueonly,separator=%x1e)");
    let out = s.ok(["log", "-1", format.as_str(), revert, "--"], None)?;
    Ok(out
        .split('\u{1e}')
        .map(str::trim)
        .filter(|v| is_full_sha(v))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    /// A bare remote and two guardians' clones of it, each with the same bad commit deployed.
    fn two_clones() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        std::path::PathBuf,
        String,
    ) {
        let (tmp, dev) = init();
        commit(&dev, "a", "1\n", "base");
        let bad = commit(&dev, "a", "2\n", "bad");
        git(
            tmp.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        let remote = tmp.path().join("remote.git").display().to_string();
        git(&dev, &["remote", "add", "origin", &remote]);
        git(&dev, &["push", "-q", "origin", "main"]);
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for clone in [&a, &b] {
            git(
                tmp.path(),
                &["clone", "-q", &remote, &clone.display().to_string()],
            );
        }
        (tmp, a, b, bad)
    }

    #[test]
    fn the_second_guardian_finds_the_first_ones_revert_and_moves_to_it() {
        let (_tmp, a, b, bad) = two_clones();
        let first = Repo::open(&a).unwrap();
        first.revert(&request(&bad, "chg_a-revert")).unwrap();
        first.push("origin", "main").unwrap();

        let second = Repo::open(&b).unwrap();
        second.revert(&request(&bad, "chg_b-revert")).unwrap();
        let own = second.head().unwrap();
        assert!(second.push("origin", "main").is_err(), "the lease is taken");
        let lease = second
            .yield_to_remote_revert("origin", "main", &own, Duration::from_secs(60))
            .unwrap();
        let theirs = lease.taken_by.expect("the first revert is found");
        assert_eq!(theirs.commit, first.head().unwrap());
        assert_eq!(second.head().unwrap(), theirs.commit, "moved to it");
        assert!(second.is_clean().unwrap());
        assert!(!lease.commands.is_empty(), "what it ran is recorded");
    }

    #[test]
    fn without_a_revert_of_the_same_change_on_the_remote_nothing_moves() {
        let (_tmp, a, b, bad) = two_clones();
        // Someone else pushed an unrelated commit: the push fails for another reason.
        commit(&a, "other", "x\n", "unrelated work");
        git(&a, &["push", "-q", "origin", "main"]);
        let second = Repo::open(&b).unwrap();
        second.revert(&request(&bad, "chg_b-revert")).unwrap();
        let own = second.head().unwrap();
        let lease = second
            .yield_to_remote_revert("origin", "main", &own, Duration::from_secs(60))
            .unwrap();
        assert_eq!(lease.taken_by, None);
        assert_eq!(
            second.head().unwrap(),
            own,
            "its revert stays, for a person"
        );
    }
}
