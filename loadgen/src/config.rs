//! What a run does: the target, the users, how they arrive, how they
//! connect, and the bounds that make every run stop by itself.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The system under load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// A flashsale server, over the native protocol.
    Native {
        /// `host:port`.
        addr: String,
        /// Sent in the handshake.
        api_key: Option<String>,
    },
    /// Redis with the reservation Lua script (the standard design), for
    /// comparison: `redis://host:port`.
    Redis {
        /// The Redis URL.
        url: String,
    },
    /// A flashsale HTTP front (in-process or gateway), with signed-in users:
    /// each request carries a token for its user, signed with `secret`.
    Http {
        /// `host:port`.
        addr: String,
        /// The HS256 secret the front verifies tokens with.
        secret: Vec<u8>,
        /// The `iss` the front requires (`--jwt-issuer`), if any.
        issuer: Option<String>,
        /// The `aud` the front requires (`--jwt-audience`), if any.
        audience: Option<String>,
    },
}

impl Target {
    /// This target without its secrets (the API key, the JWT secret), for
    /// what a run writes down: its reports are attached to tickets and
    /// shared, and must not carry the keys to the sale.
    #[must_use]
    pub fn redacted(&self) -> Target {
        match self {
            Target::Native { addr, api_key } => Target::Native {
                addr: addr.clone(),
                api_key: api_key.as_ref().map(|_| "(not shown)".to_owned()),
            },
            Target::Http {
                addr,
                issuer,
                audience,
                ..
            } => Target::Http {
                addr: addr.clone(),
                secret: Vec::new(),
                issuer: issuer.clone(),
                audience: audience.clone(),
            },
            Target::Redis { url } => Target::Redis { url: url.clone() },
        }
    }
}

/// When users arrive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Arrival {
    /// Every user at t0: the opening second.
    Burst,
    /// An open model: this many new users per second, each measured from
    /// its intended start (no coordinated omission).
    Rate(f64),
    /// Users spread evenly over this long.
    Ramp(Duration),
}

impl Arrival {
    /// When the `k`-th of `n` users is meant to start, after t0.
    pub fn offset(self, k: u64, n: u64) -> Duration {
        match self {
            Arrival::Burst => Duration::ZERO,
            Arrival::Rate(per_sec) => Duration::from_secs_f64(k as f64 / per_sec),
            Arrival::Ramp(over) => {
                if n == 0 {
                    Duration::ZERO
                } else {
                    over.mul_f64(k as f64 / n as f64)
                }
            }
        }
    }
}

impl FromStr for Arrival {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "burst" => Ok(Arrival::Burst),
            Some(("rate", r)) => match r.parse::<f64>() {
                Ok(r) if r.is_finite() && r > 0.0 => Ok(Arrival::Rate(r)),
                _ => Err(format!(
                    "rate {r:?} is not a positive number of users per second"
                )),
            },
            Some(("ramp", d)) => humantime::parse_duration(d)
                .map(Arrival::Ramp)
                .map_err(|e| format!("ramp duration {d:?}: {e}")),
            _ => Err(format!(
                "unknown arrival model {s:?}: use burst, rate:R or ramp:DURATION"
            )),
        }
    }
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arrival::Burst => write!(f, "burst"),
            Arrival::Rate(r) => write!(f, "rate:{r}"),
            Arrival::Ramp(d) => write!(f, "ramp:{}", humantime::format_duration(*d)),
        }
    }
}

/// How users reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Connections {
    /// Users multiplexed over this many pipelined connections (over all
    /// processes), the way application back ends use the native client.
    Pipelined(usize),
    /// Each user opens its own connection (connect, handshake, reserve,
    /// close): the connection storm. At most this many open at once per
    /// process.
    PerUser {
        /// Connections open at once, per process.
        concurrency: usize,
    },
}

/// What winners do with a hold, in a sale with holds: the shop's payments
/// and the buyers' cancellations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// Share of users who pay for their hold (by a hash of the user id, like
    /// the retry share).
    pub pay_fraction: f64,
    /// Share of the other users who cancel their hold; the rest abandon it
    /// and let it expire.
    pub cancel_fraction: f64,
    /// How long after the hold is granted the payment (or the cancel)
    /// reaches the server.
    pub after: Duration,
}

/// How a draw run's entrants arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawRun {
    /// Spread the entrants evenly over the draw window (the default);
    /// false: follow the run's `arrival` from the window's opening.
    pub spread: bool,
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// What is loaded.
    pub target: Target,
    /// The sale id.
    pub sale: String,
    /// Distinct users.
    pub users: u64,
    /// The first user id; users are `user_base..user_base + users`.
    pub user_base: u64,
    /// Arrival model.
    pub arrival: Arrival,
    /// Connection model.
    pub connections: Connections,
    /// Worker processes (each with its own slice of users).
    pub processes: usize,
    /// Share of users that send a second reserve after their first answer;
    /// a third of those send both at once instead.
    pub retry_fraction: f64,
    /// Requests unanswered this long count as timeouts.
    pub timeout: Duration,
    /// Keep the load going this long after t0, cycling through the users
    /// again (every repeat is a retry); `None`: each user once.
    pub duration: Option<Duration>,
    /// Hard bound on the whole run, after t0.
    pub deadline: Duration,
    /// Requests in flight per pipelined connection (capped by the server's).
    pub window: usize,
    /// Time given to workers to connect before t0.
    pub start_in: Duration,
    /// Payment behaviour in a sale with holds; `None`: a hold counts as a
    /// win, as in a run shorter than the hold.
    pub payment: Option<Payment>,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Addresses the client side of connections is bound to, in turn
    /// (`--source-addrs`), for a crowd or a connection-per-user run; empty:
    /// the kernel chooses.
    #[serde(default)]
    pub source_addrs: Vec<std::net::IpAddr>,
    /// A crowd of held event streams (`--hold-streams`), over these
    /// fronts; `None`: no streams.
    #[serde(default)]
    pub crowd: Option<crate::crowd::Crowd>,
    /// A draw run (`--draw`): users enter the sale's draw window, and the
    /// published draw and every user's result are checked after it closes
    /// ([`crate::draw`]). Lanes retry `busy` answers.
    #[serde(default)]
    pub draw: Option<DrawRun>,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

impl Config {
    /// A burst of `users` against the native server at `addr`, with the
    /// defaults of the CLI.
    pub fn native(addr: impl Into<String>, sale: impl Into<String>, users: u64) -> Config {
        Config {
            target: Target::Native {
                addr: addr.into(),
                api_key: None,
            },
            sale: sale.into(),
            users,
            user_base: 1,
            arrival: Arrival::Burst,
            connections: Connections::Pipelined(16),
            processes: 1,
            retry_fraction: 0.0,
            timeout: Duration::from_secs(10),
            duration: None,
            deadline: Duration::from_secs(120),
            window: 1024,
            start_in: Duration::from_millis(500),
            payment: None,
            json: None,
            source_addrs: Vec::new(),
            crowd: None,
            draw: None,
            progress: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redacted_target_keeps_no_secret() {
        let secret = "a-jwt-secret-that-must-stay-home-0123456789";
        let http = Target::Http {
            addr: "127.0.0.1:8080".into(),
            secret: secret.as_bytes().to_vec(),
            issuer: Some("shop".into()),
            audience: None,
        };
        let native = Target::Native {
            addr: "127.0.0.1:7070".into(),
            api_key: Some(secret.into()),
        };
        for target in [http, native] {
            let written = serde_json::to_string(&target.redacted()).unwrap();
            assert!(!written.contains(secret), "{written}");
            assert!(written.contains("127.0.0.1"), "{written}");
            let secret_bytes = serde_json::to_string(&secret.as_bytes()).unwrap();
            let inner = &secret_bytes[1..secret_bytes.len() - 1];
            assert!(!written.contains(inner), "{written}");
        }
    }

    #[test]
    fn arrival_models_parse_and_schedule() {
        assert_eq!("burst".parse(), Ok(Arrival::Burst));
        assert_eq!("rate:1000".parse(), Ok(Arrival::Rate(1000.0)));
        assert_eq!("ramp:2s".parse(), Ok(Arrival::Ramp(Duration::from_secs(2))));
        for bad in [
            "",
            "rate",
            "rate:0",
            "rate:-5",
            "rate:x",
            "ramp:soon",
            "flood",
        ] {
            assert!(bad.parse::<Arrival>().is_err(), "{bad}");
        }
        assert_eq!(Arrival::Burst.offset(7, 10), Duration::ZERO);
        assert_eq!(
            Arrival::Rate(100.0).offset(50, 1000),
            Duration::from_millis(500)
        );
        assert_eq!(
            Arrival::Ramp(Duration::from_secs(10)).offset(5, 10),
            Duration::from_secs(5)
        );
        assert_eq!(
            Arrival::Ramp(Duration::from_secs(1)).offset(0, 0),
            Duration::ZERO
        );
    }
}
