//! The fair draw's two public checks, run as a buyer would run them: the
//! real `flashsale-server audit --draw` binary and `python3
//! docs/verify_draw.py`, on documents built with the rule's own crate.
//!
//! Both must pass every honest document and refuse every tampered one (an
//! entrant added or removed, winners swapped, a ticket renumbered, the seed
//! or the commitment changed); the audit must also tell a missing or
//! malformed document (exit 2) from a dishonest one (exit 1), over files,
//! stdin and HTTP. The script printed in docs/FAIRNESS.md must be the one in
//! the repository.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flashsale_draw::{commitment, score, to_hex, Document};
use flashsale_tests::poll::run_for_output;
use flashsale_tests::{runtime, workspace_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest a verifier may take on these small documents.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// The honest draw's seed.
const SEED: [u8; 32] = [0x5a; 32];
/// When the test draws were made.
const DRAWS_AT: u64 = 1_767_225_600_000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// 300 entrants for 20 tickets.
fn honest() -> Document {
    Document::new("gig", 20, DRAWS_AT, &SEED, (0..300).map(|i| 1_000 + 7 * i))
}

/// One way to tamper with a document.
type Tamper = dyn Fn(&mut Document);

/// `doc` tampered with in every way the checks must catch, each named.
fn tampered(doc: &Document) -> Vec<(&'static str, Document)> {
    // An entrant added whose score beats the last winner's: the winners
    // published are no longer the rule's.
    let last = score(&SEED, doc.winners.last().expect("winners").user);
    let intruder = (50_000..60_000u64)
        .find(|u| score(&SEED, *u) < last)
        .expect("one id in 10,000 scores among the first 20 of 300");
    let first = doc.winners[0].user;
    let changes: [(&'static str, &Tamper); 9] = [
        ("entrant added", &move |d| {
            d.entrants.push(intruder);
            d.entrants.sort_unstable();
        }),
        ("entrant removed", &move |d| {
            d.entrants.retain(|&u| u != first)
        }),
        ("winners swapped", &|d| d.winners.swap(0, 1)),
        ("ticket renumbered", &|d| d.winners[2].ticket = 21),
        ("tickets exchanged", &|d| {
            d.winners[0].ticket = 2;
            d.winners[1].ticket = 1;
        }),
        ("seed changed", &|d| d.seed = to_hex(&[0x5b; 32])),
        ("commitment changed", &|d| {
            d.commitment = to_hex(&commitment(&[0x5b; 32]));
        }),
        ("entrants out of order", &|d| d.entrants.swap(0, 1)),
        ("winner not an entrant", &|d| d.winners[4].user = 77_777),
    ];
    changes
        .into_iter()
        .map(|(name, change)| {
            let mut bad = doc.clone();
            change(&mut bad);
            (name, bad)
        })
        .collect()
}

fn write(dir: &Path, name: &str, doc: &Document) -> PathBuf {
    let path = dir.join(format!("{}.json", name.replace(' ', "_")));
    std::fs::write(
        &path,
        serde_json::to_vec(doc).expect("a document serializes"),
    )
    .expect("write");
    path
}

/// What a verifier said: its exit code, stdout and stderr.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command, stdin: Stdio) -> Ran {
    let (status, stdout, stderr) = run_for_output(cmd, stdin, RUN_TIMEOUT).expect("it runs");
    Ran {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// `flashsale-server audit --draw SOURCE ARGS...`.
fn audit(source: &str, args: &[&str]) -> Ran {
    let mut cmd = Command::new(workspace_bin("flashsale-server"));
    cmd.args(["audit", "--draw", source]).args(args);
    run(&mut cmd, Stdio::null())
}

/// `python3 docs/verify_draw.py FILE ARGS...`.
fn python(file: &Path, args: &[&str]) -> Ran {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("docs/verify_draw.py"))
        .arg(file)
        .args(args);
    run(&mut cmd, Stdio::null())
}

#[test]
fn honest_draws_pass_both_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let many = honest();
    let few = Document::new("small", 5, DRAWS_AT, &[9; 32], [42, 7, 19]);
    let empty = Document::new("empty", 5, DRAWS_AT, &[1; 32], []);
    for doc in [&many, &few, &empty] {
        let file = write(dir.path(), &doc.sale, doc);
        let path = file.to_str().expect("utf-8 path");
        let want = format!(
            "draw of sale {}: {} entrants, {} winners, seed matches commitment {}: OK",
            doc.sale,
            doc.entrants.len(),
            doc.winners.len(),
            doc.commitment
        );
        let ran = audit(path, &[]);
        assert_eq!(ran.code, Some(0), "{}: {}", doc.sale, ran.stderr);
        assert_eq!(ran.stdout.trim_end(), want);
        assert!(ran.stderr.contains("only the document's own consistency"));
        let ran = audit(path, &["--commitment", &doc.commitment.to_uppercase()]);
        assert_eq!(ran.code, Some(0), "{}: {}", doc.sale, ran.stderr);
        assert!(ran.stderr.is_empty(), "{}", ran.stderr);

        let ran = python(&file, &[]);
        assert_eq!(ran.code, Some(0), "{}: {}", doc.sale, ran.stderr);
        assert_eq!(ran.stdout.trim_end(), want, "the script says the same");
        let ran = python(&file, &[&doc.commitment]);
        assert_eq!(ran.code, Some(0), "{}: {}", doc.sale, ran.stderr);
    }
    assert_eq!(few.winners.len(), 3, "fewer entrants than tickets: all win");
}

#[test]
fn every_tampering_fails_both_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = honest();
    for (name, bad) in tampered(&doc) {
        let file = write(dir.path(), name, &bad);
        let ran = audit(file.to_str().expect("utf-8 path"), &[]);
        assert_eq!(
            ran.code,
            Some(1),
            "audit of {name}: {}{}",
            ran.stdout,
            ran.stderr
        );
        assert!(
            ran.stderr.contains("does not check out") && ran.stdout.is_empty(),
            "{name}: {}",
            ran.stderr
        );
        let ran = python(&file, &[]);
        assert_ne!(ran.code, Some(0), "script on {name}: {}", ran.stdout);
        assert!(ran.stdout.is_empty(), "{name}: {}", ran.stdout);
    }
}

/// A server that re-rolls its seed after seeing the entrants publishes a
/// document that is consistent in itself; only the commitment recorded
/// before the sale catches it.
#[test]
fn a_rerolled_seed_is_caught_only_by_the_earlier_commitment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = honest();
    let rerolled = Document::new(
        "gig",
        doc.capacity,
        DRAWS_AT,
        &[0x77; 32],
        doc.entrants.clone(),
    );
    let file = write(dir.path(), "rerolled", &rerolled);
    let path = file.to_str().expect("utf-8 path");
    assert_eq!(audit(path, &[]).code, Some(0));
    let ran = audit(path, &["--commitment", &doc.commitment]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("not the one published before the sale"),
        "{}",
        ran.stderr
    );
    assert_eq!(python(&file, &[]).code, Some(0));
    assert_ne!(python(&file, &[&doc.commitment]).code, Some(0));
}

/// `docs/verify_draw.py` refuses `file` (named `name`) as no draw document:
/// exit 2 and a line saying so, not a Python traceback.
fn assert_script_refuses(file: &Path, name: &str) {
    let ran = python(file, &[]);
    assert_eq!(ran.code, Some(2), "{name}: {}", ran.stderr);
    assert!(
        ran.stderr.contains("not a flashsale draw document") && !ran.stderr.contains("Traceback"),
        "{name}: {}",
        ran.stderr
    );
}

#[test]
fn unreadable_documents_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let honest_json = serde_json::to_string(&honest()).expect("serializes");
    let cases = [
        ("garbage", "not json at all".to_owned()),
        ("truncated", honest_json[..honest_json.len() / 2].to_owned()),
        ("empty", String::new()),
        ("other json", r#"{"sale":"gig","capacity":5}"#.to_owned()),
        (
            "negative user",
            honest_json.replacen("[1000,", "[-1000,", 1),
        ),
    ];
    for (name, text) in cases {
        let file = dir.path().join(format!("{}.json", name.replace(' ', "_")));
        std::fs::write(&file, text).expect("write");
        let ran = audit(file.to_str().expect("utf-8 path"), &[]);
        assert_eq!(ran.code, Some(2), "{name}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("not a draw document"),
            "{name}: {}",
            ran.stderr
        );
        assert_script_refuses(&file, name);
    }
    // The script's own reading: a seed of the wrong type or not hex.
    for (name, text) in [
        (
            "null seed",
            honest_json.replacen("\"seed\":\"", "\"seed\":null,\"x\":\"", 1),
        ),
        (
            "seed not hex",
            honest_json.replacen("\"seed\":\"", "\"seed\":\"zz", 1),
        ),
        ("a list", "[1, 2]".to_owned()),
    ] {
        let file = dir.path().join(format!("{}.json", name.replace(' ', "_")));
        std::fs::write(&file, text).expect("write");
        assert_script_refuses(&file, name);
    }
    let missing = dir.path().join("missing.json");
    let ran = audit(missing.to_str().expect("utf-8 path"), &[]);
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.contains("cannot read"), "{}", ran.stderr);
    assert_script_refuses(&missing, "missing");
    let ran = audit("https://shop.example/api/sales/gig/draw", &[]);
    assert_eq!(ran.code, Some(2), "clap's usage error");
    assert!(ran.stderr.contains("no TLS"), "{}", ran.stderr);
    let ran = audit("x.json", &["--commitment", "abc"]);
    assert_eq!(ran.code, Some(2));
}

#[test]
fn stdin_is_a_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = honest();
    let file = write(dir.path(), "stdin", &doc);
    let mut cmd = Command::new(workspace_bin("flashsale-server"));
    cmd.args(["audit", "--draw", "-", "--commitment", &doc.commitment]);
    let ran = run(&mut cmd, Stdio::from(File::open(&file).expect("open")));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.ends_with(": OK\n"), "{}", ran.stdout);

    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("docs/verify_draw.py")).arg("-");
    let ran = run(&mut cmd, Stdio::from(File::open(&file).expect("open")));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);

    let bad = write(dir.path(), "stdin_bad", &tampered(&doc)[2].1);
    let mut cmd = Command::new(workspace_bin("flashsale-server"));
    cmd.args(["audit", "--draw", "-"]);
    let ran = run(&mut cmd, Stdio::from(File::open(&bad).expect("open")));
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
}

#[test]
fn the_script_in_fairness_md_is_the_one_in_the_repository() {
    let root = repo_root();
    let page = std::fs::read_to_string(root.join("docs/FAIRNESS.md")).expect("FAIRNESS.md");
    let script = std::fs::read_to_string(root.join("docs/verify_draw.py")).expect("the script");
    let start = page.find("```python\n").expect("a python block") + "```python\n".len();
    let len = page[start..].find("```\n").expect("the block ends");
    assert_eq!(&page[start..start + len], script);
    assert!(
        page[start + len..].find("```python").is_none(),
        "one script only"
    );
}

/// One canned answer of the fake server.
struct Route {
    path: &'static str,
    status: &'static str,
    headers: &'static str,
    body: String,
}

/// Serves `routes` on `127.0.0.1:0` on `rt` (until it is dropped), one
/// request per connection, 404 for any other path.
fn serve(rt: &tokio::runtime::Runtime, routes: Vec<Route>) -> SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let routes = std::sync::Arc::new(routes);
    rt.spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let routes = std::sync::Arc::clone(&routes);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split(' ').nth(1).unwrap_or("");
                let (status, headers, body) = routes
                    .iter()
                    .find(|r| r.path == path)
                    .map_or(("404 Not Found", "", "{}"), |r| {
                        (r.status, r.headers, r.body.as_str())
                    });
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

fn status_of(doc: &Document, commitment: &str) -> String {
    format!(
        r#"{{"sale":"{}","capacity":{},"draw":{{"commitment":"{commitment}","draws_at":{},"entrants":{},"seed":"{}"}}}}"#,
        doc.sale,
        doc.capacity,
        doc.draws_at,
        doc.entrants.len(),
        doc.seed
    )
}

#[test]
fn audit_over_http() {
    let doc = honest();
    let json = serde_json::to_string(&doc).expect("serializes");
    let other = to_hex(&commitment(&[0x5b; 32]));
    let ok = |path, body: String| Route {
        path,
        status: "200 OK",
        headers: "",
        body,
    };
    let rt = runtime();
    let addr = serve(
        &rt,
        vec![
            ok("/api/sales/gig/draw", json.clone()),
            ok("/api/sales/gig", status_of(&doc, &doc.commitment)),
            ok("/api/sales/liar/draw", json.clone()),
            ok("/api/sales/liar", status_of(&doc, &other)),
            ok("/api/sales/mute/draw", json.clone()),
            Route {
                path: "/api/sales/early/draw",
                status: "425 Too Early",
                headers: "retry-after: 7\r\n",
                body: r#"{"error":"not_found","message":"not drawn yet"}"#.into(),
            },
            Route {
                path: "/api/sales/gone/draw",
                status: "404 Not Found",
                headers: "",
                body: r#"{"error":"unknown_sale","message":"no sale \"gone\""}"#.into(),
            },
            ok("/api/sales/junk/draw", "<html>".into()),
        ],
    );
    let url = |sale: &str| format!("http://{addr}/api/sales/{sale}/draw");

    let ran = audit(&url("gig"), &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran
        .stdout
        .starts_with("draw of sale gig: 300 entrants, 20 winners"));
    assert!(
        ran.stderr.contains("from the same server"),
        "{}",
        ran.stderr
    );
    let ran = audit(&url("gig"), &["--commitment", &doc.commitment]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.is_empty(), "{}", ran.stderr);
    let ran = audit(&url("gig"), &["--commitment", &other]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);

    // The status names another commitment than the document: the server
    // tells two stories.
    let ran = audit(&url("liar"), &[]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("not the one published before the sale"),
        "{}",
        ran.stderr
    );
    // No status at all: the document is still checked, and the note says
    // how little that proves.
    let ran = audit(&url("mute"), &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("answered 404"), "{}", ran.stderr);

    let ran = audit(&url("early"), &[]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("the draw has not been made yet, retry after 7 s"),
        "{}",
        ran.stderr
    );
    let ran = audit(&url("gone"), &[]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains(r#"no sale "gone""#), "{}", ran.stderr);
    let ran = audit(&url("junk"), &[]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("not a draw document"), "{}", ran.stderr);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let ran = audit(&format!("http://127.0.0.1:{port}/api/sales/gig/draw"), &[]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("cannot reach"), "{}", ran.stderr);
}
