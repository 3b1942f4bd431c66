//! `flashsale-server audit --draw SOURCE`: checks a published fair draw.
//!
//! The document comes from a file, from stdin (`-`) or from the server
//! itself (`http://HOST/api/sales/{sale}/draw`); the check is
//! [`flashsale_draw::audit`], the same code the server draws with, so what
//! is checked here is exactly the rule of `docs/FAIRNESS.md`. Three answers,
//! as exit codes, so that scripts can tell a dishonest draw from a missing
//! one: 0, the draw checks out; 1, it does not (the mismatch is printed);
//! 2, there is no document to check (unreadable, malformed, too large, not
//! drawn yet).
//!
//! The commitment the document is compared with is the one thing it cannot
//! prove about itself. `--commitment` is the strong form: a commitment the
//! buyer recorded before the sale. Without it, for a URL ending in `/draw`,
//! the sale's status from the same server is used: that proves only that
//! the server tells one story, not that the story was fixed in advance.
//!
//! The HTTP client is deliberately small: plain `http://` (no TLS: fetch an
//! `https://` document with another client and pipe it in), one request per
//! connection, an overall timeout, and a cap on every body read, so a hostile
//! or broken server can waste at most that much time and memory. The pure
//! parts (what a source is, the status URL, the verdict) are apart from the
//! I/O and unit-tested; the end-to-end tests run the binary
//! (`tests/tests/draw_audit.rs`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use flashsale_draw::{audit, parse_hex32, AuditError, Document};
use flashsale_protocol::json::ErrorBody;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, HOST, RETRY_AFTER};
use hyper::{Request, StatusCode, Uri};

/// Largest draw document read: a million entrants take about 20 MB, so this
/// leaves room for far larger sales while bounding what a bad source costs.
pub(crate) const MAX_DOCUMENT_LEN: usize = 512 << 20;
/// Largest sale status read (a few hundred bytes in practice).
const MAX_STATUS_LEN: usize = 1 << 20;

/// `audit` and its flags.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// The published draw: a file, `-` for stdin, or the server's
    /// http://HOST:PORT/api/sales/SALE/draw (plain HTTP only: no TLS; fetch
    /// an https:// document with another client and pipe it to `-`).
    #[arg(long, value_name = "SOURCE", value_parser = Source::parse)]
    pub(crate) draw: Source,

    /// The commitment (64 hex digits) the sale showed before it opened, as
    /// recorded then: the document must carry this one. Without it, a URL
    /// ending in /draw is checked against the sale's status from the same
    /// server, which proves only that the server is consistent, not that
    /// the commitment came first.
    #[arg(long, value_name = "HEX", value_parser = parse_commitment)]
    pub(crate) commitment: Option<String>,

    /// Longest time for the whole download over HTTP (e.g. 30s, 5m).
    #[arg(long, default_value = "2m", value_parser = flashsale_http::flags::positive_duration)]
    pub(crate) timeout: Duration,
}

/// Where the document comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    File(PathBuf),
    /// `GET` over plain HTTP.
    Url(Uri),
}

impl Source {
    /// `-`, an `http://` URL with a host, or else a file path; any other
    /// scheme is refused rather than read as a file name.
    fn parse(text: &str) -> anyhow::Result<Source> {
        if text == "-" {
            return Ok(Source::Stdin);
        }
        if let Some((scheme, _)) = text.split_once("://") {
            if !scheme.eq_ignore_ascii_case("http") {
                bail!(
                    "{scheme}:// is not supported, only plain http:// (no TLS): \
                     fetch the document with another client and pass it on stdin (-)"
                );
            }
            let uri: Uri = text
                .parse()
                .with_context(|| format!("{text:?} is not a URL"))?;
            anyhow::ensure!(uri.host().is_some(), "{text:?} has no host");
            return Ok(Source::Url(uri));
        }
        anyhow::ensure!(!text.is_empty(), "an empty path");
        Ok(Source::File(PathBuf::from(text)))
    }
}

/// `--commitment`: 64 hex digits, taken in either case and kept lowercase,
/// the form the server publishes.
fn parse_commitment(text: &str) -> anyhow::Result<String> {
    let lower = text.trim().to_ascii_lowercase();
    anyhow::ensure!(
        parse_hex32(&lower).is_some(),
        "a commitment is 64 hex digits (SHA-256 of the seed)"
    );
    Ok(lower)
}

/// What the audit concluded.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The draw checks out: the line to print.
    Passed(String),
    /// It does not.
    Failed {
        /// The sale the document names.
        sale: String,
        /// The first mismatch.
        error: AuditError,
    },
}

/// Where the expected commitment came from, for the note beside the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// `--commitment`.
    Given(String),
    /// The sale's status, from the same server.
    Status(String),
    /// Nowhere: only the document's own consistency can be checked.
    None,
}

impl Expected {
    fn commitment(&self) -> Option<&str> {
        match self {
            Expected::Given(c) | Expected::Status(c) => Some(c),
            Expected::None => None,
        }
    }

    /// What a passing verdict does not prove, for stderr; `None` when the
    /// commitment was one recorded before the sale.
    fn caveat(&self) -> Option<&'static str> {
        match self {
            Expected::Given(_) => None,
            Expected::Status(_) => Some(
                "the commitment was compared with the sale's status from the same server: \
                 for the stronger check pass --commitment with one recorded before the sale",
            ),
            Expected::None => Some(
                "no commitment from before the sale to compare with (--commitment): \
                 only the document's own consistency was checked",
            ),
        }
    }
}

/// Audits `document` against `expected`.
fn verdict(document: &Document, expected: Option<&str>) -> Verdict {
    match audit(document, expected) {
        Ok(passed) => Verdict::Passed(format!(
            "draw of sale {}: {} entrants, {} winners, seed matches commitment {}: OK",
            document.sale, passed.entrants, passed.winners, document.commitment
        )),
        Err(error) => Verdict::Failed {
            sale: document.sale.clone(),
            error,
        },
    }
}

/// Runs `audit`: prints the verdict and returns its exit code.
pub(crate) fn run(args: &AuditArgs) -> ExitCode {
    let checked = load(args).and_then(|(bytes, expected)| {
        let document: Document = serde_json::from_slice(&bytes)
            .context("not a draw document (the JSON of GET /api/sales/{sale}/draw)")?;
        Ok((verdict(&document, expected.commitment()), expected))
    });
    match checked {
        Ok((Verdict::Passed(line), expected)) => {
            if let Some(caveat) = expected.caveat() {
                eprintln!("flashsale-server: note: {caveat}");
            }
            // A closed stdout (a pipe to `head`) is no reason to panic.
            let _ = writeln!(std::io::stdout(), "{line}");
            ExitCode::SUCCESS
        }
        Ok((Verdict::Failed { sale, error }, _)) => {
            eprintln!("flashsale-server: the draw of sale {sale} does not check out: {error}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("flashsale-server: cannot audit the draw: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The document's bytes, and the commitment to hold it to.
fn load(args: &AuditArgs) -> anyhow::Result<(Vec<u8>, Expected)> {
    let given = args.commitment.clone().map(Expected::Given);
    match &args.draw {
        Source::Stdin => Ok((
            read_bounded(std::io::stdin().lock(), MAX_DOCUMENT_LEN, "stdin")?,
            given.unwrap_or(Expected::None),
        )),
        Source::File(path) => {
            let what = path.display().to_string();
            let file = std::fs::File::open(path).with_context(|| format!("cannot read {what}"))?;
            Ok((
                read_bounded(file, MAX_DOCUMENT_LEN, &what)?,
                given.unwrap_or(Expected::None),
            ))
        }
        Source::Url(uri) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                tokio::time::timeout(args.timeout, download(uri, given))
                    .await
                    .with_context(|| format!("{uri} did not answer within {:?}", args.timeout))?
            })
        }
    }
}

/// The document from `uri`, and the commitment: `given`, or else the one in
/// the sale's status when `uri` ends in `/draw`.
async fn download(uri: &Uri, given: Option<Expected>) -> anyhow::Result<(Vec<u8>, Expected)> {
    let answer = get(uri, MAX_DOCUMENT_LEN).await?;
    match answer.status {
        StatusCode::OK => {}
        StatusCode::TOO_EARLY => bail!("{}", not_drawn_yet(answer.retry_after.as_deref())),
        status => bail!(
            "GET {uri} answered {status}: {}",
            error_message(&answer.body)
        ),
    }
    let expected = match (given, status_uri(uri)) {
        (Some(given), _) => given,
        (None, None) => Expected::None,
        (None, Some(status)) => match get(&status, MAX_STATUS_LEN).await {
            Ok(a) if a.status == StatusCode::OK => {
                commitment_in_status(&a.body).map_or(Expected::None, Expected::Status)
            }
            Ok(a) => {
                eprintln!("flashsale-server: note: GET {status} answered {}", a.status);
                Expected::None
            }
            Err(e) => {
                eprintln!("flashsale-server: note: cannot read the sale's status: {e:#}");
                Expected::None
            }
        },
    };
    Ok((answer.body.to_vec(), expected))
}

/// An HTTP answer, its body read whole.
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Bytes,
}

/// `GET uri` over a fresh plain-HTTP connection, reading at most `limit`
/// bytes of body.
async fn get(uri: &Uri, limit: usize) -> anyhow::Result<Answer> {
    let authority = uri.authority().context("the URL has no host")?;
    let address = match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{authority}:80"),
    };
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .with_context(|| format!("cannot reach {address}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(HOST, authority.as_str())
        .header(ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("GET {uri}"))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(response.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            bail!("the answer of GET {uri} is larger than {limit} bytes")
        }
        Err(e) => bail!("reading the answer of GET {uri}: {e}"),
    };
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// The whole of `reader`, refused beyond `limit` bytes.
fn read_bounded(reader: impl Read, limit: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    anyhow::ensure!(
        bytes.len() <= limit,
        "{what} is larger than {limit} bytes: not a draw document"
    );
    Ok(bytes)
}

/// The message for `425 Too Early`, with the server's `Retry-After` seconds.
fn not_drawn_yet(retry_after: Option<&str>) -> String {
    match retry_after.and_then(|s| s.trim().parse::<u64>().ok()) {
        Some(seconds) => format!("the draw has not been made yet, retry after {seconds} s"),
        None => "the draw has not been made yet, retry later".to_owned(),
    }
}

/// An error answer's message: the API's own when it is its JSON, else the
/// start of the body.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// `http://HOST/api/sales/gig` for `http://HOST/api/sales/gig/draw`: the
/// sale's status beside its draw. `None` for a URL not ending in `/draw`.
fn status_uri(draw: &Uri) -> Option<Uri> {
    let sale = draw
        .path()
        .strip_suffix("/draw")
        .filter(|p| !p.is_empty())?;
    Uri::builder()
        .scheme(draw.scheme()?.clone())
        .authority(draw.authority()?.clone())
        .path_and_query(sale)
        .build()
        .ok()
}

/// `draw.commitment` of a sale's status, if it has one.
fn commitment_in_status(body: &[u8]) -> Option<String> {
    let status: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(status.get("draw")?.get("commitment")?.as_str()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsale_draw::{commitment, to_hex};

    #[test]
    fn sources() {
        assert_eq!(Source::parse("-").unwrap(), Source::Stdin);
        assert_eq!(
            Source::parse("draw.json").unwrap(),
            Source::File("draw.json".into())
        );
        let url = "http://127.0.0.1:8080/api/sales/gig/draw";
        assert_eq!(
            Source::parse(url).unwrap(),
            Source::Url(url.parse().unwrap())
        );
        let tls = Source::parse("https://shop.example/api/sales/gig/draw").unwrap_err();
        assert!(tls.to_string().contains("no TLS"), "{tls}");
        assert!(Source::parse("ftp://x/y").is_err());
        assert!(Source::parse("http://").is_err());
        assert!(Source::parse("").is_err());
    }

    #[test]
    fn commitments_are_64_hex_digits_kept_lowercase() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_commitment(&hex).unwrap(), "ab".repeat(32));
        assert!(parse_commitment(&hex[2..]).is_err());
        assert!(parse_commitment(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn the_status_sits_beside_the_draw() {
        let status = |s: &str| status_uri(&s.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(
            status("http://h:1/api/sales/gig/draw?x=1").as_deref(),
            Some("http://h:1/api/sales/gig")
        );
        assert_eq!(status("http://h/api/sales/gig"), None);
        assert_eq!(status("http://h/draw"), None);
        let body =
            br#"{"sale":"gig","draw":{"commitment":"ab","draws_at":5,"entrants":2,"seed":null}}"#;
        assert_eq!(commitment_in_status(body).as_deref(), Some("ab"));
        assert_eq!(commitment_in_status(br#"{"sale":"gig"}"#), None);
        assert_eq!(commitment_in_status(br#"{"draw":null}"#), None);
        assert_eq!(commitment_in_status(b"not json"), None);
    }

    #[test]
    fn verdicts() {
        let doc = Document::new("gig", 5, 1, &[4; 32], 1..=50);
        let Verdict::Passed(line) = verdict(&doc, Some(&doc.commitment)) else {
            panic!("an honest draw fails");
        };
        assert_eq!(
            line,
            format!(
                "draw of sale gig: 50 entrants, 5 winners, seed matches commitment {}: OK",
                doc.commitment
            )
        );
        let other = to_hex(&commitment(&[5; 32]));
        assert!(matches!(
            verdict(&doc, Some(&other)),
            Verdict::Failed {
                error: AuditError::CommitmentChanged { .. },
                ..
            }
        ));
        let mut swapped = doc.clone();
        swapped.winners.swap(0, 1);
        assert!(matches!(verdict(&swapped, None), Verdict::Failed { .. }));
        assert!(Expected::Given(other.clone()).caveat().is_none());
        assert!(Expected::Status(other).caveat().is_some());
        assert!(Expected::None.caveat().is_some());
    }

    #[test]
    fn reads_are_bounded() {
        assert_eq!(read_bounded(&b"12345"[..], 5, "x").unwrap(), b"12345");
        let err = read_bounded(&b"123456"[..], 5, "x").unwrap_err();
        assert!(err.to_string().contains("larger than 5 bytes"), "{err}");
    }

    #[test]
    fn messages() {
        assert_eq!(
            not_drawn_yet(Some("12")),
            "the draw has not been made yet, retry after 12 s"
        );
        assert_eq!(
            not_drawn_yet(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            "the draw has not been made yet, retry later"
        );
        assert_eq!(
            not_drawn_yet(None),
            "the draw has not been made yet, retry later"
        );
        let api = br#"{"error":"unknown_sale","message":"no such sale"}"#;
        assert_eq!(error_message(api), "no such sale");
        assert_eq!(error_message(b"plain"), "plain");
    }
}
