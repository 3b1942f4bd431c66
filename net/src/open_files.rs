//! The process's open-file limit, and the connection limits that fit in it.
//!
//! Every connection is a file descriptor. The soft limit a process starts
//! with is often 1,024, a default for programs that never ask for more,
//! while the hard limit is what the administrator allows (`LimitNOFILE=` of
//! a systemd unit, `ulimit -Hn`). A server configured for 100,000
//! connections under the soft default would fail its 1,021st `accept`:
//! new connections would wait in the backlog, unanswered, while the
//! configuration promised they would be served or refused. So at startup
//! [`raise_to_hard_limit`] lifts the soft limit to the hard one, and the
//! binaries check every connection limit against what that leaves
//! ([`FileBudget`]): the process's own files (listeners, runtimes, the log,
//! the admin listener's connections) are set aside, a limit larger than the
//! rest is clamped to it with a WARN line that names the flag, both values
//! and the reason, and when not even [`MIN_CONNECTIONS`] fit, the binary
//! refuses to start.
//!
//! Each front's limit is checked alone: a deployment uses mostly one of
//! them, and splitting the descriptors between fronts in advance would
//! starve the busy one. When their sum exceeds what is left, one more WARN
//! line says so ([`FileBudget::check_total`]); should they all fill up at
//! once, accepting backs off and the last connections wait in the backlog
//! ([`accept_until`](crate::accept_until)).

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Fewest connections worth starting for: with room for fewer, the limit
/// is a mistake, and a server that refuses almost everyone is no server.
pub const MIN_CONNECTIONS: u64 = 16;

/// Files a binary keeps open besides its connections, whatever its flags:
/// standard streams, the runtimes' event queues and wakers, the signal
/// handler's, the data directory's lock and log, a PostgreSQL connection of
/// the drain. Measured at about 20 for a server with every front; rounded
/// up, as a limit set too close would refuse the connections it promised.
pub const BASE_RESERVE: u64 = 32;

/// The soft open-file limit before and after [`raise_to_hard_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit in force now: the hard limit, unless raising failed.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the result.
/// A failure is logged (WARN) and leaves the limit as it was; when even
/// reading the limit fails, the process is taken to have the common
/// default of 1,024.
pub fn raise_to_hard_limit() -> OpenFileLimit {
    let (before, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            return OpenFileLimit {
                before: 1024,
                soft: 1024,
                hard: 1024,
            };
        }
    };
    if before >= hard {
        tracing::info!(
            limit = before,
            "open-file limit: {before}, already the hard limit"
        );
        return OpenFileLimit {
            before,
            soft: before,
            hard,
        };
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(
                before,
                limit = hard,
                "open-file limit raised from {before} to the hard limit, {hard}"
            );
            OpenFileLimit {
                before,
                soft: hard,
                hard,
            }
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                limit = before,
                hard,
                "cannot raise the open-file limit from {before} to the hard limit, {hard}; keeping {before}"
            );
            OpenFileLimit {
                before,
                soft: before,
                hard,
            }
        }
    }
}

/// The open-file limit so little that not even [`MIN_CONNECTIONS`] fit
/// beside the process's own files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the process may open {files} files (RLIMIT_NOFILE), and about {reserved} are its own \
     (listeners, runtimes, the log), leaving room for fewer than {MIN_CONNECTIONS} connections; \
     raise the hard limit (LimitNOFILE= in a systemd unit, ulimit -Hn in a shell)"
)]
pub struct TooFewFiles {
    /// The soft limit in force.
    pub files: u64,
    /// Files set aside for the process's own use.
    pub reserved: u64,
}

/// What is left for connections under an open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileBudget {
    files: u64,
    reserved: u64,
}

impl FileBudget {
    /// `files`, the soft limit in force, less `reserved` for the process's
    /// own files.
    ///
    /// # Errors
    ///
    /// When fewer than [`MIN_CONNECTIONS`] are left.
    pub fn new(files: u64, reserved: u64) -> Result<FileBudget, TooFewFiles> {
        if files.saturating_sub(reserved) < MIN_CONNECTIONS {
            return Err(TooFewFiles { files, reserved });
        }
        Ok(FileBudget { files, reserved })
    }

    /// Descriptors left for connections.
    pub fn available(&self) -> u64 {
        self.files - self.reserved
    }

    /// `wanted`, the value of `flag`, or what is left for connections if
    /// that is less; a clamp is logged (WARN) with both values and why.
    pub fn fit(&self, flag: &str, wanted: usize) -> usize {
        let fitted = self.fitted(wanted);
        if fitted < wanted {
            let FileBudget { files, reserved } = *self;
            tracing::warn!(
                flag,
                configured = wanted,
                clamped = fitted,
                files,
                reserved,
                "{flag} {wanted} clamped to {fitted}: the process may open {files} files \
                 (RLIMIT_NOFILE) and keeps about {reserved} for its own use; raise the hard \
                 limit (LimitNOFILE=) to allow more"
            );
        }
        fitted
    }

    /// `wanted`, or what is left for connections if that is less.
    fn fitted(&self, wanted: usize) -> usize {
        usize::try_from(self.available()).map_or(wanted, |left| wanted.min(left))
    }

    /// Logs (WARN) when `limits`, each already [fitted](Self::fit), add up
    /// to more than is left: every front may fill up alone, not all at
    /// once. Returns whether they fit together.
    pub fn check_total(&self, limits: &[(&str, usize)]) -> bool {
        let total: u64 = limits.iter().map(|(_, n)| *n as u64).sum();
        let available = self.available();
        let fits = total <= available;
        if !fits {
            let flags: Vec<&str> = limits.iter().map(|(flag, _)| *flag).collect();
            let flags = flags.join(" + ");
            tracing::warn!(
                total,
                available,
                "{flags} allow {total} connections together, more than the {available} \
                 descriptors left: each front may fill up alone, but if all do at once the \
                 last connections wait in the backlog"
            );
        }
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_fits_whole_or_is_clamped_to_what_is_left() {
        let budget = FileBudget::new(20_000, 40).unwrap();
        assert_eq!(budget.available(), 19_960);
        assert_eq!(budget.fit("--max-connections", 100_000), 19_960);
        assert_eq!(budget.fit("--max-connections", 19_960), 19_960);
        assert_eq!(budget.fit("--max-connections", 500), 500);
        assert!(budget.check_total(&[("a", 19_000), ("b", 960)]));
        assert!(!budget.check_total(&[("a", 19_000), ("b", 961)]));
    }

    #[test]
    fn too_few_files_for_connections_is_refused() {
        let refused = FileBudget::new(40, 32).unwrap_err();
        assert_eq!(
            refused,
            TooFewFiles {
                files: 40,
                reserved: 32
            }
        );
        assert!(refused.to_string().contains("LimitNOFILE"), "{refused}");
        assert!(
            FileBudget::new(10, 32).is_err(),
            "more reserved than allowed"
        );
        assert_eq!(
            FileBudget::new(32 + MIN_CONNECTIONS, 32)
                .unwrap()
                .available(),
            MIN_CONNECTIONS
        );
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        // Raising twice is raising once: the second call finds the soft
        // limit at the hard one. (Run under `prlimit --nofile=S:H` to see a
        // first raise; the end-to-end test `file_limit` does.)
        let first = raise_to_hard_limit();
        assert_eq!(first.soft, first.hard);
        let second = raise_to_hard_limit();
        assert_eq!(second.before, first.hard);
        assert_eq!(second.soft, second.hard);
    }
}
