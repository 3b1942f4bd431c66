//! The HTTP front's flags, shared by `flashsale-server` and
//! `flashsale-gateway` so that both spell them (and their environment
//! variables) the same.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::client_ip::{parse_cidr, TrustedProxies};
use crate::config::{
    DEFAULT_HTTP_MAX_CONNECTIONS, DEFAULT_HTTP_MAX_CONNECTIONS_PER_IP, DEFAULT_HTTP_MAX_IN_FLIGHT,
};
use crate::rate_limit::{Rate, DEFAULT_RATE_LIMIT_MAX_KEYS};
use crate::HttpConfig;

/// Flags of the HTTP front, in the server and in the gateway, to
/// `#[command(flatten)]` into either command line.
#[derive(Debug, Args)]
pub struct HttpFlags {
    /// File holding the HS256 secret of buyers' tokens (or set
    /// FLASHSALE_JWT_SECRET to the secret itself).
    #[arg(long, env = "FLASHSALE_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,

    /// The `iss` every buyer's token must carry, exactly (none: unchecked).
    #[arg(long, env = "FLASHSALE_JWT_ISSUER", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    jwt_issuer: Option<String>,

    /// The `aud` every buyer's token must name (none: a token naming any
    /// audience is refused).
    #[arg(long, env = "FLASHSALE_JWT_AUDIENCE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    jwt_audience: Option<String>,

    /// Longest a buyer's token may be valid, from `iat` (or now) to `exp`
    /// (e.g. 24h, 15m).
    #[arg(long, env = "FLASHSALE_JWT_MAX_LIFETIME", default_value = "24h", value_parser = positive_duration)]
    jwt_max_lifetime: Duration,

    /// Demo mode: POST /demo/token hands out tokens to anyone, signed with
    /// a random secret of its own (refused with a configured one). Never for
    /// a real sale; loopback only unless --insecure-demo-on-public-address.
    #[arg(long, env = "FLASHSALE_DEMO")]
    demo: bool,

    /// Allow --demo on an address other than loopback: whoever reaches it can
    /// mint tokens and buy the whole stock.
    #[arg(
        long,
        env = "FLASHSALE_INSECURE_DEMO_ON_PUBLIC_ADDRESS",
        requires = "demo"
    )]
    insecure_demo_on_public_address: bool,

    /// Accept a JWT secret shorter than 32 bytes. Tests only: a short secret
    /// can be guessed offline from a single token.
    #[arg(long, env = "FLASHSALE_INSECURE_SHORT_JWT_SECRET")]
    insecure_short_jwt_secret: bool,

    /// HTTP requests in progress beyond which new ones get 503 at once.
    #[arg(long, env = "FLASHSALE_HTTP_MAX_IN_FLIGHT", default_value_t = DEFAULT_HTTP_MAX_IN_FLIGHT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    http_max_in_flight: usize,

    /// Open HTTP connections beyond which new ones get 503 and are closed
    /// (clamped, with a warning, to what the open-file limit allows).
    #[arg(long, env = "FLASHSALE_HTTP_MAX_CONNECTIONS", default_value_t = DEFAULT_HTTP_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    http_max_connections: usize,

    /// Open HTTP connections from one client address (IPv6: one /64) beyond
    /// which its new ones get 429 and are closed.
    #[arg(long, env = "FLASHSALE_HTTP_MAX_CONNECTIONS_PER_IP", default_value_t = DEFAULT_HTTP_MAX_CONNECTIONS_PER_IP, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    http_max_connections_per_ip: usize,

    /// Requests per user (the token's `sub`): N/s, N/m or N/h, optionally
    /// ,burst=B (e.g. 5/s,burst=10) [default burst: the rate per second,
    /// rounded up, at least 1; default: no limit].
    #[arg(long, env = "FLASHSALE_RATE_LIMIT_USER", value_name = "RATE")]
    rate_limit_user: Option<Rate>,

    /// Requests per client address (IPv6: per /64) to /api/ and /demo/,
    /// as --rate-limit-user [default: no limit].
    #[arg(long, env = "FLASHSALE_RATE_LIMIT_IP", value_name = "RATE")]
    rate_limit_ip: Option<Rate>,

    /// Users, and addresses, each rate limit keeps a bucket for at most;
    /// past it, idle buckets are dropped, and if none is idle the table
    /// starts over.
    #[arg(long, env = "FLASHSALE_RATE_LIMIT_MAX_KEYS", default_value_t = DEFAULT_RATE_LIMIT_MAX_KEYS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    rate_limit_max_keys: usize,

    /// A proxy (CIDR, or one address) whose X-Forwarded-For names the
    /// client for --rate-limit-ip; repeatable, or comma-separated. Never
    /// read from other peers.
    #[arg(long = "trusted-proxy", env = "FLASHSALE_TRUSTED_PROXY", value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    trusted_proxies: Vec<ipnet::IpNet>,

    /// Open event streams beyond which new ones get 503 [default: a quarter
    /// of --http-max-connections].
    #[arg(long, env = "FLASHSALE_HTTP_MAX_STREAMS", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    http_max_streams: Option<usize>,

    /// Longest life of one event stream, after which it ends and the browser
    /// reconnects (e.g. 5m).
    #[arg(long, env = "FLASHSALE_HTTP_STREAM_LIFETIME", default_value = "5m", value_parser = positive_duration)]
    http_stream_lifetime: Duration,

    /// Longest a request body may take to arrive after its head (e.g. 10s).
    #[arg(long, env = "FLASHSALE_HTTP_BODY_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    http_body_timeout: Duration,

    /// Longest a request's head may take to arrive (e.g. 10s).
    #[arg(long, env = "FLASHSALE_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    http_header_timeout: Duration,

    /// Close HTTP connections on which nothing moves for this long (e.g. 30s).
    #[arg(long, env = "FLASHSALE_HTTP_IDLE_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    http_idle_timeout: Duration,

    /// HTTP threads, each with its own runtime and listener on the HTTP
    /// address [default: one per core].
    #[arg(long, env = "FLASHSALE_HTTP_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    http_threads: Option<u16>,
}

/// A duration flag (`humantime`: `500ms`, `5s`, `2m`) that must not be
/// zero, as a clap value parser.
///
/// # Errors
///
/// Zero, or text that is not a duration.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

impl HttpFlags {
    /// The HTTP front's configuration; `env_secret` is the value of
    /// FLASHSALE_JWT_SECRET.
    ///
    /// # Errors
    ///
    /// Both a secret file and FLASHSALE_JWT_SECRET, or an unreadable file.
    pub fn config(
        &self,
        listen: SocketAddr,
        env_secret: Option<String>,
    ) -> anyhow::Result<HttpConfig> {
        let secret = read_secret(
            self.jwt_secret_file.as_deref(),
            env_secret,
            "--jwt-secret-file",
            "FLASHSALE_JWT_SECRET",
        )?;
        let mut config = HttpConfig::new(listen)
            .demo(self.demo)
            .max_in_flight(self.http_max_in_flight);
        config.jwt_secret = secret;
        config.demo_on_public_address = self.insecure_demo_on_public_address;
        config.insecure_short_secret = self.insecure_short_jwt_secret;
        config.token_rules = flashsale_token::Rules::new()
            .issuer(self.jwt_issuer.clone())
            .audience(self.jwt_audience.clone())
            .max_lifetime(self.jwt_max_lifetime);
        config.max_connections = self.http_max_connections;
        config.header_timeout = self.http_header_timeout;
        config.idle_timeout = self.http_idle_timeout;
        config.threads = self.http_threads.map(usize::from);
        config.max_connections_per_ip = self.http_max_connections_per_ip;
        config.max_streams = self.http_max_streams;
        config.rate_limit.user = self.rate_limit_user;
        config.rate_limit.ip = self.rate_limit_ip;
        config.rate_limit.max_keys = self.rate_limit_max_keys;
        config.trusted_proxies = TrustedProxies::new(self.trusted_proxies.clone());
        config.stream_lifetime = self.http_stream_lifetime;
        config.body_timeout = self.http_body_timeout;
        Ok(config)
    }
}

/// A secret from its file (`file_flag`) or from its environment variable
/// (`env_name`, whose value is `env`), never both; `None` when neither is set.
/// Secrets are read from files or the environment, never from flags, which
/// every local user can read in the process list.
///
/// # Errors
///
/// Both are set, or the file cannot be read.
pub fn read_secret(
    file: Option<&std::path::Path>,
    env: Option<String>,
    file_flag: &str,
    env_name: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    match (file, env) {
        (Some(_), Some(_)) => anyhow::bail!("both {file_flag} and {env_name} are set; use one"),
        (Some(path), None) => {
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read {file_flag} {}", path.display()))?;
            Ok(Some(trim_line_end(text)))
        }
        (None, Some(secret)) => Ok(Some(secret.into_bytes())),
        (None, None) => Ok(None),
    }
}

/// The native protocol's API key, from its flag (or environment variable)
/// or from its file (`--api-key-file`); never empty, since an empty key
/// would turn the check off.
///
/// # Errors
///
/// Both are given, the file cannot be read or is not UTF-8, or the key is
/// empty.
pub fn read_api_key(
    key: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    let key = match (key, file) {
        (Some(_), Some(_)) => anyhow::bail!("both --api-key and --api-key-file are set; use one"),
        (Some(key), None) => Some(key.to_owned()),
        (None, Some(path)) => {
            let bytes = read_secret(Some(path), None, "--api-key-file", "")?.unwrap_or_default();
            let key = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("--api-key-file {} is not UTF-8", path.display()))?;
            Some(key)
        }
        (None, None) => None,
    };
    anyhow::ensure!(
        key.as_deref() != Some(""),
        "the API key is empty: an empty key would turn the check off; give a real key or none"
    );
    Ok(key)
}

/// A secret file usually ends with a newline that is not part of the key.
fn trim_line_end(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        web: HttpFlags,
    }

    fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn defaults_and_bounds() {
        let http = Cli::parse_from(["x"]).web.config(listen(), None).unwrap();
        assert!(!http.demo);
        assert!(!http.demo_on_public_address && !http.insecure_short_secret);
        assert_eq!(http.jwt_secret, None);
        let opted = Cli::parse_from([
            "x",
            "--demo",
            "--insecure-demo-on-public-address",
            "--insecure-short-jwt-secret",
        ])
        .web
        .config(listen(), None)
        .unwrap();
        assert!(opted.demo_on_public_address && opted.insecure_short_secret);
        assert!(Cli::try_parse_from(["x", "--insecure-demo-on-public-address"]).is_err());
        assert_eq!(http.max_in_flight, DEFAULT_HTTP_MAX_IN_FLIGHT);
        assert_eq!(http.max_connections, DEFAULT_HTTP_MAX_CONNECTIONS);
        assert_eq!(
            http.max_connections_per_ip,
            DEFAULT_HTTP_MAX_CONNECTIONS_PER_IP
        );
        assert_eq!(http.stream_limit(), DEFAULT_HTTP_MAX_CONNECTIONS / 4);
        assert!(http.stream_limit() < http.max_connections);
        assert_eq!(
            http.stream_lifetime,
            crate::config::DEFAULT_HTTP_STREAM_LIFETIME
        );
        assert_eq!(http.body_timeout, crate::config::DEFAULT_HTTP_BODY_TIMEOUT);
        let small = Cli::parse_from(["x", "--http-max-connections", "40"])
            .web
            .config(listen(), None)
            .unwrap();
        assert_eq!(small.stream_limit(), 10, "a quarter of the connections");
        let set = Cli::parse_from(["x", "--http-max-streams", "7"])
            .web
            .config(listen(), None)
            .unwrap();
        assert_eq!(set.stream_limit(), 7);
        assert_eq!(http.token_rules, flashsale_token::Rules::new());
        for (flag, value) in [
            ("--jwt-max-lifetime", "0s"),
            ("--jwt-issuer", ""),
            ("--jwt-audience", ""),
            ("--http-max-in-flight", "0"),
            ("--http-max-connections", "0"),
            ("--http-max-connections-per-ip", "0"),
            ("--http-max-streams", "0"),
            ("--http-stream-lifetime", "0s"),
            ("--http-body-timeout", "0s"),
            ("--http-header-timeout", "0s"),
            ("--http-idle-timeout", "0s"),
            ("--rate-limit-user", "0/s"),
            ("--rate-limit-user", "5/d"),
            ("--rate-limit-ip", "5/s,burst=0"),
            ("--rate-limit-max-keys", "0"),
            ("--trusted-proxy", "10.0.0.0/33"),
            ("--trusted-proxy", "proxy.example"),
        ] {
            assert!(
                Cli::try_parse_from(["x", flag, value]).is_err(),
                "{flag} {value}"
            );
        }
    }

    #[test]
    fn rate_limits_are_off_unless_set() {
        let http = Cli::parse_from(["x"]).web.config(listen(), None).unwrap();
        assert_eq!(http.rate_limit, crate::rate_limit::RateLimitConfig::new());
        assert!(http.trusted_proxies.is_empty());
        let http = Cli::parse_from([
            "x",
            "--rate-limit-user",
            "5/s",
            "--rate-limit-ip",
            "100/m,burst=20",
            "--rate-limit-max-keys",
            "500",
            "--trusted-proxy",
            "10.0.0.0/8,::1",
            "--trusted-proxy",
            "192.0.2.1",
        ])
        .web
        .config(listen(), None)
        .unwrap();
        assert_eq!(http.rate_limit.user, Some("5/s,burst=5".parse().unwrap()));
        assert_eq!(http.rate_limit.ip, Some("100/m,burst=20".parse().unwrap()));
        assert_eq!(http.rate_limit.max_keys, 500);
        let nets: Vec<String> = http
            .trusted_proxies
            .nets()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128", "192.0.2.1/32"]);
    }

    #[test]
    fn token_rules() {
        let args = [
            "x",
            "--jwt-issuer",
            "https://id.example",
            "--jwt-audience",
            "flashsale",
            "--jwt-max-lifetime",
            "15m",
        ];
        let http = Cli::parse_from(args).web.config(listen(), None).unwrap();
        let rules = flashsale_token::Rules::new()
            .issuer(Some("https://id.example".into()))
            .audience(Some("flashsale".into()))
            .max_lifetime(Duration::from_secs(900));
        assert_eq!(http.token_rules, rules);
    }

    #[test]
    fn secret_file_and_env_are_exclusive() {
        let dir = std::env::temp_dir().join(format!("flashsale-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let path = path.to_str().unwrap();
        let args = ["x", "--jwt-secret-file", path];
        let http = Cli::parse_from(args).web.config(listen(), None).unwrap();
        assert_eq!(http.jwt_secret.as_deref(), Some(&b"from-file"[..]));
        assert!(Cli::parse_from(args)
            .web
            .config(listen(), Some("env".into()))
            .is_err());
        let http = Cli::parse_from(["x"])
            .web
            .config(listen(), Some("env".into()))
            .unwrap();
        assert_eq!(http.jwt_secret.as_deref(), Some(&b"env"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
