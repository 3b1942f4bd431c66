//! Who sends what, when: the users of each worker process and each
//! connection, their intended start times, and who retries. Pure and lazy:
//! a lane computes its next user on demand, so a million users cost no
//! memory up front.

use std::time::Duration;

use crate::config::{Arrival, Payment};

/// Whether a user sends more than one reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// One request.
    No,
    /// A second request after the first answer.
    After,
    /// Two requests at once.
    Concurrent,
}

/// Which users retry: a deterministic share `fraction` of them (by a hash of
/// the user id, so reruns and processes agree), a third of those sending
/// both requests at once.
pub fn retry_of(user: u64, fraction: f64) -> Retry {
    let x = (splitmix64(user) >> 11) as f64 / (1u64 << 53) as f64;
    if x >= fraction {
        Retry::No
    } else if x < fraction / 3.0 {
        Retry::Concurrent
    } else {
        Retry::After
    }
}

/// What a user does with a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payer {
    /// The shop confirms the hold as paid.
    Pays,
    /// The buyer cancels it.
    Cancels,
    /// Nobody does anything: it expires.
    Abandons,
}

/// Which users pay, cancel or abandon: deterministic shares by a hash of
/// the user id, salted so that they do not follow who retries.
pub fn payer_of(user: u64, payment: &Payment) -> Payer {
    let unit = |x: u64| (splitmix64(x) >> 11) as f64 / (1u64 << 53) as f64;
    let x = unit(user ^ PAYER_SALT);
    if x < payment.pay_fraction {
        Payer::Pays
    } else if unit(!user ^ PAYER_SALT) < payment.cancel_fraction {
        Payer::Cancels
    } else {
        Payer::Abandons
    }
}

/// Decorrelates [`payer_of`] from [`retry_of`].
const PAYER_SALT: u64 = 0x5041_594d_454e_5453;

/// A fixed hash of the user id, not an RNG: every process and rerun must pick the same users.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A worker process's users: a contiguous range of ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slice {
    /// Index of the worker.
    pub worker: usize,
    /// Number of workers.
    pub workers: usize,
    /// First user id.
    pub first_user: u64,
    /// Users in the slice.
    pub users: u64,
}

/// Splits `users` ids from `base` into `workers` near-equal slices.
pub fn slices(base: u64, users: u64, workers: usize) -> Vec<Slice> {
    let workers = workers.max(1);
    let w = workers as u64;
    let mut first = base;
    (0..workers)
        .map(|i| {
            let n = users / w + u64::from((i as u64) < users % w);
            let slice = Slice {
                worker: i,
                workers,
                first_user: first,
                users: n,
            };
            first += n;
            slice
        })
        .collect()
}

/// One request to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// The user.
    pub user: u64,
    /// When it is meant to start, after t0.
    pub at: Duration,
    /// Whether (and how) the user sends a second request.
    pub retry: Retry,
}

/// The requests one connection (or, for connection-per-user, one worker)
/// makes, in arrival order.
///
/// Arrival order interleaves the workers: the `j`-th user of worker `w` of
/// `P` is the `(j·P + w)`-th to arrive overall, so an open-model rate is
/// spread over every process instead of running them one after another.
#[derive(Debug, Clone)]
pub struct Lane {
    slice: Slice,
    total_users: u64,
    arrival: Arrival,
    retry_fraction: f64,
    /// Local index of the next user, counting repeats past the slice.
    next: u64,
    step: u64,
    /// Past the first round, keep cycling (a `--duration` run).
    cycle: bool,
}

impl Lane {
    /// Lane `lane` of `lanes` over `slice`.
    pub fn new(
        slice: Slice,
        lane: usize,
        lanes: usize,
        total_users: u64,
        arrival: Arrival,
        retry_fraction: f64,
        cycle: bool,
    ) -> Lane {
        Lane {
            slice,
            total_users,
            arrival,
            retry_fraction,
            next: lane as u64,
            step: lanes.max(1) as u64,
            cycle,
        }
    }

    /// Users of the first round in this lane.
    pub fn first_round_len(&self) -> u64 {
        let start = self.next.min(self.slice.users);
        (self.slice.users - start).div_ceil(self.step)
    }

    fn planned(&self, j: u64) -> Option<Planned> {
        if self.slice.users == 0 || (!self.cycle && j >= self.slice.users) {
            return None;
        }
        let k = j * self.slice.workers as u64 + self.slice.worker as u64;
        let user = self.slice.first_user + j % self.slice.users;
        let retry = if j < self.slice.users {
            retry_of(user, self.retry_fraction)
        } else {
            Retry::No
        };
        Some(Planned {
            user,
            at: self.arrival.offset(k, self.total_users),
            retry,
        })
    }

    /// The next request, without taking it.
    pub fn peek(&self) -> Option<Planned> {
        self.planned(self.next)
    }

    /// Whether the next request is a repeat of a user already sent.
    pub fn in_repeats(&self) -> bool {
        self.next >= self.slice.users
    }

    /// Takes the next request.
    pub fn take(&mut self) -> Option<Planned> {
        let p = self.planned(self.next)?;
        self.next += self.step;
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_user_once() {
        let s = slices(10, 7, 3);
        assert_eq!(s.iter().map(|s| s.users).collect::<Vec<_>>(), vec![3, 2, 2]);
        assert_eq!(
            s.iter().map(|s| s.first_user).collect::<Vec<_>>(),
            vec![10, 13, 15]
        );
        assert_eq!(slices(1, 0, 2).iter().map(|s| s.users).sum::<u64>(), 0);
    }

    #[test]
    fn lanes_partition_a_slice() {
        let slice = slices(100, 10, 1)[0];
        let mut seen = Vec::new();
        for lane in 0..3 {
            let mut l = Lane::new(slice, lane, 3, 10, Arrival::Burst, 0.0, false);
            let expected = l.first_round_len();
            let mut n = 0;
            while let Some(p) = l.take() {
                seen.push(p.user);
                n += 1;
            }
            assert_eq!(n, expected);
        }
        seen.sort_unstable();
        assert_eq!(seen, (100..110).collect::<Vec<_>>());
    }

    #[test]
    fn arrival_interleaves_workers() {
        let s = slices(0, 4, 2);
        let at = |w: usize, j| {
            Lane::new(s[w], j, 100, 4, Arrival::Rate(1.0), 0.0, false)
                .peek()
                .unwrap()
                .at
        };
        assert_eq!(
            [at(0, 0), at(1, 0), at(0, 1), at(1, 1)].map(|d| d.as_secs()),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn cycling_repeats_users_without_retries() {
        let slice = slices(1, 2, 1)[0];
        let mut l = Lane::new(slice, 0, 1, 2, Arrival::Burst, 1.0, true);
        let users: Vec<u64> = (0..5).map(|_| l.take().unwrap().user).collect();
        assert_eq!(users, vec![1, 2, 1, 2, 1]);
        assert!(l.in_repeats());
        assert_eq!(l.take().unwrap().retry, Retry::No);
    }

    #[test]
    fn the_retry_hash_is_splitmix64() {
        // The published first output for state 0: reruns pick the same users.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn payers_cancellers_and_abandoners_come_in_their_shares() {
        let payment = Payment {
            pay_fraction: 0.3,
            cancel_fraction: 0.5,
            after: Duration::from_secs(1),
        };
        let n = 100_000;
        let count = |who| (0..n).filter(|u| payer_of(*u, &payment) == who).count();
        let (pays, cancels, abandons) = (
            count(Payer::Pays),
            count(Payer::Cancels),
            count(Payer::Abandons),
        );
        assert_eq!(pays + cancels + abandons, n as usize);
        assert!((29_000..31_000).contains(&pays), "{pays}");
        assert!((34_000..36_000).contains(&cancels), "{cancels}");
        let all = Payment {
            pay_fraction: 1.0,
            ..payment
        };
        assert!((0..1000).all(|u| payer_of(u, &all) == Payer::Pays));
        let none = Payment {
            pay_fraction: 0.0,
            cancel_fraction: 0.0,
            ..payment
        };
        assert!((0..1000).all(|u| payer_of(u, &none) == Payer::Abandons));
    }

    #[test]
    fn retry_share_is_about_the_fraction() {
        let n = 100_000;
        let retrying = (0..n).filter(|u| retry_of(*u, 0.1) != Retry::No).count();
        let both = (0..n)
            .filter(|u| retry_of(*u, 0.1) == Retry::Concurrent)
            .count();
        assert!((9_000..11_000).contains(&retrying), "{retrying}");
        assert!((2_800..3_900).contains(&both), "{both}");
        assert!((0..1000).all(|u| retry_of(u, 0.0) == Retry::No));
    }
}
