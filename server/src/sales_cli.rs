//! `flashsale-server sales ...`: the operator's API from a shell.
//!
//! Each subcommand is one HTTP request to a running server's admin listener
//! (`--admin URL`), with the key from `--admin-key-file` or
//! `FLASHSALE_ADMIN_KEY`. The answer is printed as a table for people, or
//! as the API's own JSON with `--json` for scripts; an error answer prints
//! its message and exits non-zero.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use flashsale_http::flags::read_secret;
use flashsale_protocol::json::AdminSaleBody;
use flashsale_protocol::json::{ConfirmBody, CreateSaleBody, ErrorBody, HoldOutcomeBody, UserBody};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};

/// How long one admin request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `sales` and its flags.
#[derive(Debug, Args)]
pub(crate) struct SalesArgs {
    /// The server's admin API, e.g. http://127.0.0.1:7072.
    #[arg(
        long,
        env = "FLASHSALE_ADMIN_URL",
        global = true,
        default_value = "http://127.0.0.1:7072"
    )]
    admin: String,

    /// File holding the operator's key (or set FLASHSALE_ADMIN_KEY).
    #[arg(long, env = "FLASHSALE_ADMIN_KEY_FILE", global = true)]
    admin_key_file: Option<PathBuf>,

    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: SalesCommand,
}

#[derive(Debug, Subcommand)]
enum SalesCommand {
    /// Every sale, with its counters.
    List,
    /// Create a sale (idempotent for the same definition).
    Create {
        /// The sale id.
        sale: String,
        /// Number of tickets.
        #[arg(long)]
        capacity: u32,
        /// Opening time, Unix milliseconds [default: now].
        #[arg(long)]
        opens_at: Option<u64>,
        /// Winners hold their ticket this many seconds until paid
        /// [default: wins are final].
        #[arg(long)]
        hold_seconds: Option<u32>,
        /// Sell the first tickets by a fair draw among the users who ask
        /// within this many milliseconds of opening (docs/FAIRNESS.md)
        /// [default: first come, first served].
        #[arg(long)]
        draw_window_ms: Option<u64>,
    },
    /// Refuse reservations until resumed.
    Pause {
        /// The sale id.
        sale: String,
    },
    /// Take reservations again after a pause.
    Resume {
        /// The sale id.
        sale: String,
    },
    /// End the sale for good (open holds may still be confirmed).
    Close {
        /// The sale id.
        sale: String,
    },
    /// Confirm a user's hold as paid.
    Confirm {
        /// The sale id.
        sale: String,
        /// The holder.
        #[arg(long)]
        user: u64,
        /// The payment provider's reference.
        #[arg(long)]
        payment_ref: String,
    },
    /// Release a user's held or confirmed ticket back to stock.
    Release {
        /// The sale id.
        sale: String,
        /// The holder.
        #[arg(long)]
        user: u64,
    },
}

/// What the answer's body holds, for printing.
enum Shape {
    Sales,
    Sale,
    Outcome,
}

/// Runs one `sales` subcommand against the admin API.
///
/// # Errors
///
/// No key, an unreachable server, or an error answer (its message).
pub(crate) fn run(args: SalesArgs) -> anyhow::Result<()> {
    let key = read_secret(
        args.admin_key_file.as_deref(),
        std::env::var("FLASHSALE_ADMIN_KEY").ok(),
        "--admin-key-file",
        "FLASHSALE_ADMIN_KEY",
    )?
    .context(
        "the admin API needs the operator's key: --admin-key-file FILE or FLASHSALE_ADMIN_KEY",
    )?;
    let (method, path, body, shape) = request_of(&args.command)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = runtime.block_on(async {
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            send(&args.admin, &key, method, &path, body),
        )
        .await
        .context("the admin API did not answer in time")?
    })?;
    if !(200..300).contains(&status) && !matches!(shape, Shape::Outcome) {
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| format!("{} ({})", e.message, e.error.code()))
            .unwrap_or(text);
        bail!("HTTP {status}: {message}");
    }
    if args.json {
        println!("{text}");
    } else {
        print!("{}", render(&shape, &text)?);
    }
    if !(200..300).contains(&status) {
        bail!("HTTP {status}");
    }
    Ok(())
}

fn request_of(command: &SalesCommand) -> anyhow::Result<(Method, String, Option<String>, Shape)> {
    let action = |sale: &str, action: &str| format!("/admin/sales/{sale}/{action}");
    Ok(match command {
        SalesCommand::List => (Method::GET, "/admin/sales".into(), None, Shape::Sales),
        SalesCommand::Create {
            sale,
            capacity,
            opens_at,
            hold_seconds,
            draw_window_ms,
        } => {
            let body = CreateSaleBody {
                sale: sale.clone(),
                capacity: *capacity,
                opens_at: *opens_at,
                hold_seconds: *hold_seconds,
                draw_window_ms: *draw_window_ms,
            };
            (
                Method::POST,
                "/admin/sales".into(),
                Some(serde_json::to_string(&body)?),
                Shape::Sale,
            )
        }
        SalesCommand::Pause { sale } => (Method::POST, action(sale, "pause"), None, Shape::Sale),
        SalesCommand::Resume { sale } => (Method::POST, action(sale, "resume"), None, Shape::Sale),
        SalesCommand::Close { sale } => (Method::POST, action(sale, "close"), None, Shape::Sale),
        SalesCommand::Confirm {
            sale,
            user,
            payment_ref,
        } => {
            let body = ConfirmBody {
                user: *user,
                payment_ref: payment_ref.clone(),
            };
            (
                Method::POST,
                action(sale, "confirm"),
                Some(serde_json::to_string(&body)?),
                Shape::Outcome,
            )
        }
        SalesCommand::Release { sale, user } => (
            Method::POST,
            action(sale, "release"),
            Some(serde_json::to_string(&UserBody { user: *user })?),
            Shape::Outcome,
        ),
    })
}

/// One request over a fresh connection; the status and the body's text.
async fn send(
    base: &str,
    key: &[u8],
    method: Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(u16, String)> {
    let uri: Uri = base
        .parse()
        .with_context(|| format!("--admin {base:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--admin {base:?}: only http:// is served by the admin listener");
    }
    let authority = uri
        .authority()
        .with_context(|| format!("--admin {base:?} has no host"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("cannot reach the admin API at {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut bearer = b"Bearer ".to_vec();
    bearer.extend_from_slice(key);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, authority.as_str())
        .header(AUTHORIZATION, bearer)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// The answer as people read it.
fn render(shape: &Shape, text: &str) -> anyhow::Result<String> {
    Ok(match shape {
        Shape::Sales => table(&serde_json::from_str::<Vec<AdminSaleBody>>(text)?),
        Shape::Sale => table(&[serde_json::from_str::<AdminSaleBody>(text)?]),
        Shape::Outcome => {
            let outcome: HoldOutcomeBody = serde_json::from_str(text)?;
            match outcome.ticket {
                Some(ticket) => format!("{} (ticket {ticket})\n", outcome.outcome),
                None => format!("{}\n", outcome.outcome),
            }
        }
    })
}

fn table(sales: &[AdminSaleBody]) -> String {
    let mut out = format!(
        "{:<20} {:>9} {:>9} {:>7} {:>9} {:>7} {:<9} {:>14} {:>6} {:>8}\n",
        "SALE",
        "CAPACITY",
        "REMAINING",
        "HELD",
        "CONFIRMED",
        "SOLD",
        "STATE",
        "OPENS_AT",
        "HOLD",
        "DRAW"
    );
    for body in sales {
        let s = &body.sale;
        let draw = body
            .draw_window_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"));
        let state = serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let hold = s
            .hold_seconds
            .map_or_else(|| "-".to_owned(), |h| format!("{h}s"));
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>9} {:>7} {:>9} {:>7} {:<9} {:>14} {:>6} {:>8}",
            s.sale,
            s.capacity,
            s.remaining,
            s.held,
            s.confirmed,
            s.sold,
            state,
            s.opens_at,
            hold,
            draw
        );
        if let Some(commitment) = body.draw.as_ref().map(|d| &d.commitment) {
            let _ = writeln!(out, "  draw commitment {commitment}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use flashsale_protocol::{SaleInfo, SaleState};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sales: SalesArgs,
    }

    #[test]
    fn subcommands_become_requests() {
        let parse = |args: &[&str]| {
            let cli = Cli::parse_from(std::iter::once("x").chain(args.iter().copied()));
            let (method, path, body, _) = request_of(&cli.sales.command).unwrap();
            (method, path, body)
        };
        assert_eq!(parse(&["list"]).1, "/admin/sales");
        let (method, path, body) =
            parse(&["create", "gig", "--capacity", "5", "--hold-seconds", "60"]);
        assert_eq!((method, path.as_str()), (Method::POST, "/admin/sales"));
        assert_eq!(
            body.unwrap(),
            r#"{"sale":"gig","capacity":5,"opens_at":null,"hold_seconds":60,"draw_window_ms":null}"#
        );
        assert_eq!(parse(&["pause", "gig"]).1, "/admin/sales/gig/pause");
        let (_, path, body) = parse(&["confirm", "gig", "--user", "7", "--payment-ref", "pi"]);
        assert_eq!(path, "/admin/sales/gig/confirm");
        assert_eq!(body.unwrap(), r#"{"user":7,"payment_ref":"pi"}"#);
        assert!(
            Cli::try_parse_from(["x", "create", "gig"]).is_err(),
            "no capacity"
        );
    }

    #[test]
    fn a_table_has_a_row_per_sale() {
        let sale = SaleInfo {
            sale: "gig".into(),
            capacity: 5,
            remaining: 1,
            held: 2,
            confirmed: 2,
            sold: 4,
            state: SaleState::SoldOut,
            opens_at: 9,
            hold_seconds: Some(60),
        };
        let plain = AdminSaleBody {
            sale,
            draw_window_ms: None,
            draw: None,
        };
        let text = table(std::slice::from_ref(&plain));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("gig "), "{text}");
        assert!(
            lines[1].contains("sold_out") && lines[1].contains("60s") && lines[1].ends_with('-'),
            "{text}"
        );
        let drawn = AdminSaleBody {
            draw_window_ms: Some(5000),
            draw: Some(flashsale_protocol::json::DrawBody {
                commitment: "ab".repeat(32),
                draws_at: 14,
                entrants: 3,
                seed: None,
            }),
            ..plain
        };
        let text = table(&[drawn]);
        assert!(text.contains("5000ms"), "{text}");
        assert!(
            text.contains(&format!("draw commitment {}", "ab".repeat(32))),
            "{text}"
        );
    }
}
