//! Writes signed buyers' tokens to a file, one a line, for HTTP benchmarks
//! that send a distinct token with every request (`bench/http.sh` feeds
//! them to wrk). Minting happens before the clock starts, so the benchmark
//! measures the server's verification and not the client's signing.
//!
//! The tokens are what the identity provider would mint, by the same
//! [`flashsale_token::Minter`]: user ids `first..first + count`, valid for
//! `ttl` seconds from now.
//!
//! Usage: flashsale-mint-tokens --secret-file F --count N --out FILE

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(about = "Writes signed HS256 buyers' tokens to a file, one a line")]
struct Args {
    /// The HS256 secret, as `--jwt-secret-file` reads it (one trailing line
    /// end is not part of it).
    #[arg(long)]
    secret_file: PathBuf,
    /// How many tokens (one user each).
    #[arg(long)]
    count: u64,
    /// The first user id.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Seconds each token stays valid (at most the server's
    /// `--jwt-max-lifetime`).
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Where to write the tokens.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let raw = std::fs::read(&args.secret_file)
        .with_context(|| format!("cannot read {}", args.secret_file.display()))?;
    let secret = without_line_end(&raw);
    let minter = flashsale_token::Minter::new(secret);
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let last = args
        .first
        .checked_add(args.count)
        .context("--first + --count is past the largest user id")?;
    for user in args.first..last {
        let (token, _exp) = minter.mint(user, args.ttl)?;
        writeln!(out, "{token}")?;
    }
    out.flush()?;
    Ok(())
}

/// `raw` without one trailing `\n` or `\r\n`.
fn without_line_end(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    raw.strip_suffix(b"\r").unwrap_or(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let args = Args::parse_from(["x", "--secret-file", "s", "--count", "5", "--out", "t"]);
        assert_eq!((args.count, args.first, args.ttl), (5, 1, 3600));
    }

    #[test]
    fn only_one_line_end_is_trimmed() {
        assert_eq!(without_line_end(b"key\n"), b"key");
        assert_eq!(without_line_end(b"key\r\n"), b"key");
        assert_eq!(without_line_end(b"key\n\n"), b"key\n");
        assert_eq!(without_line_end(b"key "), b"key ");
    }
}
