//! The arithmetic of a crowd, apart from any socket: which gateway and
//! which source address a connection uses, and whether the files and the
//! ports it needs exist before the first connection is opened.
//!
//! A crowd of held streams runs into two machine limits long before it
//! runs out of CPU. Open files: every stream is a socket, and one process
//! may hold only so many (20,000 on the machine the figures come from), so
//! the users are split over worker processes, each of which must fit.
//! Ports: a connection from one source address takes one of that
//! address's ephemeral ports, and a closed buy connection keeps its port
//! in TIME_WAIT for a minute, so the crowd binds its connections to
//! several loopback addresses. Both are checked up front, with the fix in
//! the error, rather than discovered as `EMFILE` or `EADDRNOTAVAIL` in the
//! middle of the burst.

use std::net::{IpAddr, Ipv4Addr};

/// Files a worker holds besides its connections: standard streams, the
/// runtime's own descriptors, the status requests, a margin.
pub const RESERVED_FILES: u64 = 64;

/// Connections a user holds at once: its event stream, and the buy
/// connection it opens at t0 (the stream occupies the first: HTTP/1.1
/// answers nothing else on a connection until its response ends).
pub const CONNECTIONS_PER_USER: u64 = 2;

/// The most source addresses a run accepts.
pub const MAX_SOURCE_ADDRS: usize = 4096;

/// Parses `--source-addrs`: a comma-separated list of addresses and IPv4
/// ranges `FIRST-LAST` (inclusive), e.g. `127.0.0.1-127.0.0.16,127.0.1.1`.
///
/// # Errors
///
/// A word that is not an address, a range backwards or across families,
/// an empty list, or more than [`MAX_SOURCE_ADDRS`] addresses.
pub fn parse_source_addrs(text: &str) -> Result<Vec<IpAddr>, String> {
    let mut addrs = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word.split_once('-') {
            None => addrs.push(
                word.parse::<IpAddr>()
                    .map_err(|_| format!("{word:?} is not an IP address"))?,
            ),
            Some((first, last)) => {
                let parse = |s: &str| {
                    s.trim()
                        .parse::<Ipv4Addr>()
                        .map_err(|_| format!("range {word:?}: {s:?} is not an IPv4 address"))
                };
                let (first, last) = (u32::from(parse(first)?), u32::from(parse(last)?));
                if first > last {
                    return Err(format!("range {word:?} runs backwards"));
                }
                if (last - first) as usize >= MAX_SOURCE_ADDRS {
                    return Err(format!(
                        "range {word:?} has more than {MAX_SOURCE_ADDRS} addresses"
                    ));
                }
                addrs.extend((first..=last).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
            }
        }
        if addrs.len() > MAX_SOURCE_ADDRS {
            return Err(format!("more than {MAX_SOURCE_ADDRS} source addresses"));
        }
    }
    if addrs.is_empty() {
        return Err("no source address given".to_owned());
    }
    Ok(addrs)
}

/// The gateway (an index into the targets) that `user` talks to: users
/// are dealt out in turn, so every gateway gets its share of every slice.
pub fn target_of(user: u64, targets: usize) -> usize {
    (user % targets.max(1) as u64) as usize
}

/// The source address (an index) of a process's `n`-th connection: dealt
/// out in turn, with each process starting at a different one so that
/// small slices still spread.
pub fn source_of(worker: usize, n: u64, sources: usize) -> usize {
    ((worker as u64).wrapping_add(n) % sources.max(1) as u64) as usize
}

/// What a crowd needs of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Users in the run.
    pub users: u64,
    /// Worker processes.
    pub processes: u64,
    /// Buy connections open at once, per process.
    pub concurrency: u64,
}

impl Needs {
    /// Files the largest worker holds at its peak: a stream per user, the
    /// buy connections open at once, and [`RESERVED_FILES`].
    pub fn files_per_process(&self) -> u64 {
        let largest = self.users.div_ceil(self.processes.max(1));
        largest + self.concurrency.min(largest) + RESERVED_FILES
    }

    /// Checks the files of each worker against `limit` (its open-file
    /// limit).
    ///
    /// # Errors
    ///
    /// Over the limit: says how many processes would do.
    pub fn check_files(&self, limit: u64) -> Result<(), String> {
        let need = self.files_per_process();
        if need <= limit {
            return Ok(());
        }
        let room = limit.saturating_sub(self.concurrency + RESERVED_FILES);
        let fix = if room == 0 {
            format!(
                "lower --concurrency below {}",
                limit.saturating_sub(RESERVED_FILES)
            )
        } else {
            format!("use --processes {} or more", self.users.div_ceil(room))
        };
        Err(format!(
            "each of {} worker processes would hold up to {need} open files ({} streams, {} buy connections, {RESERVED_FILES} more), over the limit of {limit}: {fix}",
            self.processes,
            self.users.div_ceil(self.processes.max(1)),
            self.concurrency.min(self.users.div_ceil(self.processes.max(1))),
        ))
    }

    /// Checks the ephemeral ports: every user's two connections take a
    /// port each (the buy connection's stays in TIME_WAIT after it
    /// closes). `pools` is the number of independent port pools: the
    /// source addresses when connections are bound, else the targets (the
    /// kernel picks a port per destination).
    ///
    /// # Errors
    ///
    /// Too few ports: says how many source addresses would do.
    pub fn check_ports(&self, pools: u64, ports_per_pool: u64) -> Result<(), String> {
        let need = self.users.saturating_mul(CONNECTIONS_PER_USER);
        let have = pools.saturating_mul(ports_per_pool);
        if need <= have {
            return Ok(());
        }
        Err(format!(
            "{} users need {need} client ports and {pools} address(es) offer {have} ({ports_per_pool} each): give --source-addrs at least {} loopback addresses, e.g. 127.0.0.1-127.0.0.{}",
            self.users,
            need.div_ceil(ports_per_pool.max(1)),
            need.div_ceil(ports_per_pool.max(1)).min(254),
        ))
    }
}

/// The size of the ephemeral port range, from the text of
/// `/proc/sys/net/ipv4/ip_local_port_range` (`"32768\t60999"`).
pub fn port_range_size(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    let (low, high) = (words.next()?.ok()?, words.next()?.ok()?);
    (high >= low).then(|| high - low + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn source_addresses_parse_as_lists_and_ranges() {
        assert_eq!(
            parse_source_addrs("127.0.0.1,127.0.0.2").unwrap(),
            vec![v4(127, 0, 0, 1), v4(127, 0, 0, 2)]
        );
        let range = parse_source_addrs("127.0.0.254-127.0.1.1, ::1").unwrap();
        assert_eq!(
            range,
            vec![
                v4(127, 0, 0, 254),
                v4(127, 0, 0, 255),
                v4(127, 0, 1, 0),
                v4(127, 0, 1, 1),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_source_addrs("127.0.0.1-127.0.0.16").unwrap().len(),
            16
        );
        assert_eq!(
            parse_source_addrs("10.0.0.7-10.0.0.7").unwrap(),
            vec![v4(10, 0, 0, 7)]
        );
        for bad in [
            "",
            ",",
            "localhost",
            "127.0.0.9-127.0.0.1",
            "127.0.0.1-::1",
            "127.0.0.1-",
            "0.0.0.0-255.255.255.255",
        ] {
            assert!(parse_source_addrs(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_source_addrs("10.0.0.0-10.0.15.255").unwrap().len(),
            4096
        );
        assert!(parse_source_addrs("10.0.0.0-10.0.15.255,10.1.0.0").is_err());
    }

    #[test]
    fn users_and_connections_are_dealt_out_evenly() {
        let mut per_target = [0u64; 6];
        for user in 1..=100_000 {
            per_target[target_of(user, 6)] += 1;
        }
        assert!(
            per_target.iter().all(|n| (16_666..=16_667).contains(n)),
            "{per_target:?}"
        );
        assert_eq!(target_of(5, 1), 0);
        assert_eq!(target_of(5, 0), 0);
        let mut per_source = [0u64; 4];
        for n in 0..1000 {
            per_source[source_of(3, n, 4)] += 1;
        }
        assert_eq!(per_source, [250; 4]);
        assert_ne!(source_of(0, 0, 4), source_of(1, 0, 4));
        assert_eq!(source_of(7, 9, 0), 0);
    }

    #[test]
    fn the_file_budget_names_the_processes_needed() {
        let needs = Needs {
            users: 100_000,
            processes: 8,
            concurrency: 256,
        };
        // 12,500 streams + 256 buys + 64.
        assert_eq!(needs.files_per_process(), 12_820);
        assert!(needs.check_files(20_000).is_ok());
        let tight = Needs {
            processes: 5,
            ..needs
        };
        assert_eq!(tight.files_per_process(), 20_320);
        let err = tight.check_files(20_000).unwrap_err();
        // 100,000 users over 20,000 - 256 - 64 = 19,680 files: 6 processes.
        assert!(err.contains("--processes 6 or more"), "{err}");
        assert!(Needs {
            processes: 6,
            ..needs
        }
        .check_files(20_000)
        .is_ok());
        let greedy = Needs {
            users: 10,
            processes: 1,
            concurrency: 20_000,
        };
        assert_eq!(greedy.files_per_process(), 10 + 10 + 64);
        let err = Needs {
            users: 30_000,
            ..greedy
        }
        .check_files(20_000)
        .unwrap_err();
        assert!(err.contains("lower --concurrency"), "{err}");
    }

    #[test]
    fn the_port_budget_names_the_addresses_needed() {
        let needs = Needs {
            users: 100_000,
            processes: 8,
            concurrency: 256,
        };
        assert!(needs.check_ports(8, 28_232).is_ok());
        let err = needs.check_ports(1, 28_232).unwrap_err();
        assert!(err.contains("at least 8 loopback addresses"), "{err}");
        assert_eq!(port_range_size("32768\t60999\n"), Some(28_232));
        assert_eq!(port_range_size("60999 32768"), None);
        assert_eq!(port_range_size("x"), None);
    }
}
