//! The command line of `flashsale-gateway`: where the core is, how to reach
//! it, and the HTTP front's flags (shared with `flashsale-server`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use flashsale_gateway::GatewayConfig;
use flashsale_http::flags::{read_api_key, HttpFlags};

/// Serves the HTTP front of flashsale in front of a remote core.
#[derive(Debug, Parser)]
#[command(name = "flashsale-gateway", version, about)]
pub(crate) struct Cli {
    /// Address of the core's binary protocol; or the nodes of a cluster,
    /// comma-separated: the gateway follows the one that leads.
    #[arg(long, env = "FLASHSALE_CORE")]
    core: String,

    /// Address of the HTTP listener.
    #[arg(long, env = "FLASHSALE_HTTP")]
    http: SocketAddr,

    /// Pipelined connections to the core.
    #[arg(long, env = "FLASHSALE_CORE_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    connections: u16,

    /// API key of the core. Prefer --api-key-file: a flag's value is in the
    /// process list.
    #[arg(long, env = "FLASHSALE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// File holding the API key of the core.
    #[arg(long, env = "FLASHSALE_API_KEY_FILE", conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,

    /// A sale id the page offers; repeatable [default: every sale the core
    /// runs, asked at each page load].
    #[arg(long = "sale", env = "FLASHSALE_GATEWAY_SALES", value_delimiter = ',')]
    sales: Vec<String>,

    #[command(flatten)]
    web: HttpFlags,
}

impl Cli {
    /// The gateway's configuration; `env_secret` is the value of
    /// FLASHSALE_JWT_SECRET.
    pub(crate) fn into_config(self, env_secret: Option<String>) -> anyhow::Result<GatewayConfig> {
        let mut http = self.web.config(self.http, env_secret)?;
        http.sales = self.sales;
        http.status_max_age = flashsale_http::config::GATEWAY_STATUS_MAX_AGE;
        let mut config = GatewayConfig::new(self.core, http);
        config.connections = usize::from(self.connections);
        config.api_key = read_api_key(self.api_key.as_deref(), self.api_key_file.as_deref())?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag() {
        let cli = Cli::parse_from([
            "flashsale-gateway",
            "--core",
            "10.0.0.1:7070",
            "--http",
            "0.0.0.0:80",
            "--connections",
            "3",
            "--api-key",
            "k",
            "--sale",
            "gig",
            "--jwt-issuer",
            "https://id.example",
            "--jwt-max-lifetime",
            "2h",
            "--rate-limit-user",
            "5/s,burst=10",
            "--rate-limit-ip",
            "50/m",
            "--trusted-proxy",
            "10.0.0.0/8",
        ]);
        let config = cli.into_config(Some("x".into())).unwrap();
        assert_eq!(config.core, "10.0.0.1:7070");
        assert_eq!(
            (config.connections, config.api_key.as_deref()),
            (3, Some("k"))
        );
        assert_eq!(config.http.sales, ["gig"]);
        assert!(!config.http.demo);
        let rules = &config.http.token_rules;
        assert_eq!(rules.issuer.as_deref(), Some("https://id.example"));
        assert_eq!(rules.audience, None);
        assert_eq!(rules.max_lifetime.as_secs(), 7200);
        let limits = &config.http.rate_limit;
        assert_eq!(
            limits.user.map(|r| r.to_string()).as_deref(),
            Some("5/s,burst=10")
        );
        assert_eq!(
            limits.ip.map(|r| r.to_string()).as_deref(),
            Some("50/m,burst=1")
        );
        assert_eq!(config.http.trusted_proxies.nets().len(), 1);
    }

    #[test]
    fn the_core_key_comes_from_a_file_and_is_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "core-key\n").unwrap();
        let base = [
            "flashsale-gateway",
            "--core",
            "h:1",
            "--http",
            "127.0.0.1:0",
        ];
        let with = |extra: &[&str]| {
            Cli::try_parse_from([&base[..], extra].concat())
                .map_err(anyhow::Error::from)
                .and_then(|cli| cli.into_config(None))
        };
        let config = with(&["--api-key-file", file.to_str().unwrap()]).unwrap();
        assert_eq!(config.api_key.as_deref(), Some("core-key"));
        assert!(with(&["--api-key", ""]).is_err());
        assert!(with(&["--api-key", "k", "--api-key-file", file.to_str().unwrap()]).is_err());
    }

    #[test]
    fn the_core_and_the_http_address_are_required() {
        assert!(Cli::try_parse_from(["flashsale-gateway", "--http", "0.0.0.0:80"]).is_err());
        assert!(Cli::try_parse_from(["flashsale-gateway", "--core", "h:1"]).is_err());
        assert!(Cli::try_parse_from([
            "flashsale-gateway",
            "--core",
            "h:1",
            "--http",
            "0.0.0.0:80",
            "--connections",
            "0"
        ])
        .is_err());
    }
}
