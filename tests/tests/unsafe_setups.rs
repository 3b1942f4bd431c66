//! Set-ups that would hand the sale to whoever asks are refused at start-up,
//! with an error that says what to do: demo mode with a real secret or off
//! loopback, a native port open to the network without a key, an empty key,
//! a secret short enough to guess. And the safe alternatives work: keys and
//! secrets from files, kept out of the process list.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flashsale_protocol::{ErrorCode, ServerFrame};
use flashsale_tests::poll::run_for_stderr;
use flashsale_tests::token::{secret_file, SECRET};
use flashsale_tests::{workspace_bin, RawConn, ServerProcess};

/// Runs the server with `args` (and `env`) on a fresh data directory in
/// `dir`; it must refuse to start. Returns what it said.
fn refused(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut cmd = Command::new(workspace_bin("flashsale-server"));
    cmd.arg("--data-dir").arg(dir.join("data")).args(args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let (status, stderr) = run_for_stderr(&mut cmd, Duration::from_secs(30))?;
    anyhow::ensure!(!status.success(), "{args:?} started: {stderr}");
    Ok(stderr)
}

#[test]
fn demo_mode_never_signs_with_a_real_secret_nor_listens_in_public() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = secret_file(dir.path())?;
    let secret = secret.to_str().unwrap_or_default();
    let demo = ["--http", "127.0.0.1:0", "--demo"];
    let said = refused(
        dir.path(),
        &[&demo[..], &["--jwt-secret-file", secret]].concat(),
        &[],
    )?;
    assert!(
        said.contains("--demo") && said.contains("one or the other"),
        "{said}"
    );
    let said = refused(dir.path(), &demo, &[("FLASHSALE_JWT_SECRET", SECRET)])?;
    assert!(said.contains("--demo"), "{said}");
    let said = refused(dir.path(), &["--http", "0.0.0.0:0", "--demo"], &[])?;
    assert!(said.contains("--insecure-demo-on-public-address"), "{said}");

    // Demo mode on loopback still works, with tokens of its own.
    let server = ServerProcess::start_http(&dir.path().join("data"), &["--demo"])?;
    server.stop()
}

#[test]
fn the_native_port_needs_a_key_off_loopback_and_never_an_empty_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let said = refused(dir.path(), &["--listen", "0.0.0.0:0"], &[])?;
    assert!(
        said.contains("without an API key") && said.contains("--private-network"),
        "{said}"
    );
    let said = refused(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--api-key", ""],
        &[],
    )?;
    assert!(said.contains("empty"), "{said}");
    let said = refused(
        dir.path(),
        &["--listen", "127.0.0.1:0"],
        &[("FLASHSALE_API_KEY", "")],
    )?;
    assert!(said.contains("empty"), "{said}");

    // The key from a file: checked like the flag's, and not in argv.
    let key = dir.path().join("api-key");
    std::fs::write(&key, "a key from a file\n")?;
    let key_path = key.to_str().unwrap_or_default();
    let server = ServerProcess::start(&dir.path().join("data"), &["--api-key-file", key_path])?;
    RawConn::welcomed(server.addr(), Some("a key from a file"))?;
    let mut stranger = RawConn::connect(server.addr())?;
    match stranger.hello(Some("a guess"))? {
        ServerFrame::Error(e) => assert_eq!(e.code, ErrorCode::UNAUTHORIZED, "{e:?}"),
        other => panic!("a wrong key was answered {other:?}"),
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid()))?;
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("a key from a file"),
        "the key is not in the process list"
    );
    server.stop()
}

#[test]
fn short_jwt_secrets_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for weak in [&b"k"[..], &[0u8; 4], &[b'x'; 31]] {
        let file = dir.path().join("weak");
        std::fs::write(&file, weak)?;
        let args = [
            "--http",
            "127.0.0.1:0",
            "--jwt-secret-file",
            file.to_str().unwrap_or_default(),
        ];
        let said = refused(dir.path(), &args, &[])?;
        assert!(said.contains("at least 32"), "{said}");
    }
    // Tests may opt in, loudly.
    let file = dir.path().join("weak");
    std::fs::write(&file, b"k")?;
    let args = [
        "--jwt-secret-file",
        file.to_str().unwrap_or_default(),
        "--insecure-short-jwt-secret",
    ];
    let server = ServerProcess::start_http(&dir.path().join("data"), &args)?;
    server.stop()
}
