//! Storage faults through the real binary: a read-only data directory and a
//! full disk at startup, and a disk that fills up while the sale runs.
//!
//! Each case runs the server inside a private mount namespace
//! (`unshare --mount`) where a small tmpfs is mounted over an empty temporary
//! directory, only for that server: the host sees an empty directory, and the
//! mount disappears with the namespace. A shell script inside the namespace
//! mounts the tmpfs, seeds it, fills it to a known headroom or remounts it
//! read-only, runs the server, reports its exit status, and copies the data
//! directory back to the host so the log can be checked (and reused) after the
//! namespace is gone. This needs root (as on CI); without it the tests fail,
//! saying so.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use flashsale_client::{ClientError, ErrorCode, ReserveOutcome};
use flashsale_tests::{client_config, http, runtime, workspace_bin, ServerProcess};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a confined server may take to start, or to exit once told to.
const WAIT: Duration = Duration::from_secs(20);

/// Bytes of the log's file header (docs/WAL.md).
const FILE_HEADER: u64 = 12;
/// Bytes of a `SaleDefined` record for a 3-byte sale name: 9 + 14 + 3.
const GIG_DEFINED: u64 = 26;
/// Bytes of a `TicketSold` record for a 3-byte sale name: 9 + 22 + 3.
const GIG_SOLD: u64 = 34;

/// Runs inside the namespace. Arguments: mount point, tmpfs size, free pages
/// to leave (`-` for no filler), seed data directory (empty for none),
/// `ro` to remount read-only, host path to copy the data directory to
/// (empty for none), host path of the server's stderr, then the server and
/// its arguments.
const SCRIPT: &str = r#"
mnt=$1 size=$2 free_pages=$3 seed=$4 ro=$5 out=$6 log=$7
shift 7
mount -t tmpfs -o "size=$size" tmpfs "$mnt" || exit 97
echo "flashsale-test: mounted"
page=$(getconf PAGESIZE) || exit 98
echo "flashsale-test: page size $page"
if [ -n "$seed" ]; then cp -a "$seed" "$mnt/data" || exit 98; fi
if [ "$free_pages" != "-" ]; then
    avail=$(df -B1 --output=avail "$mnt" | tail -n 1) || exit 98
    head -c "$((avail - free_pages * page))" /dev/zero > "$mnt/filler" || exit 98
    echo "flashsale-test: available $(df -B1 --output=avail "$mnt" | tail -n 1)"
fi
if [ "$ro" = ro ]; then mount -o remount,ro "$mnt" || exit 98; fi
"$@" 2>"$log" </dev/null &
echo "flashsale-test: server pid $!"
wait $!
echo "flashsale-test: server exit $?"
if [ -n "$out" ]; then cp -a "$mnt/data" "$out" || exit 98; fi
"#;

/// How to prepare the tmpfs before the server starts.
#[derive(Default)]
struct Setup<'a> {
    /// `size=` of the tmpfs.
    size: &'a str,
    /// Fill the tmpfs with a filler file until only this many pages are free.
    free_pages: Option<u64>,
    /// A data directory (on the host) copied in as the server's.
    seed: Option<&'a Path>,
    /// Remount the tmpfs read-only before the server starts.
    read_only: bool,
    /// Where (on the host) to copy the data directory after the server exits.
    copy_out: Option<&'a Path>,
}

/// A server running on a private tmpfs in its own mount namespace.
struct Confined {
    /// `unshare`, then the shell that runs the server.
    child: Child,
    lines: mpsc::Receiver<String>,
    page_size: u64,
    server_pid: Option<i32>,
    exit: Option<i32>,
    addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    log: PathBuf,
    script_log: PathBuf,
}

impl Confined {
    /// Starts the server on a fresh tmpfs mounted at `mnt` (an empty
    /// directory), with `--data-dir <mnt>/data` and `args`, and waits until
    /// the namespace is set up (not until the server listens).
    fn spawn(mnt: &Path, setup: &Setup<'_>, args: &[&str]) -> anyhow::Result<Confined> {
        let log = mnt.with_extension("server.log");
        let script_log = mnt.with_extension("script.log");
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                SCRIPT,
                "sh",
            ])
            .arg(mnt)
            .arg(setup.size)
            .arg(setup.free_pages.map_or("-".into(), |p| p.to_string()))
            .arg(setup.seed.map_or(Path::new(""), |p| p))
            .arg(if setup.read_only { "ro" } else { "rw" })
            .arg(setup.copy_out.map_or(Path::new(""), |p| p))
            .arg(&log)
            .arg(workspace_bin("flashsale-server"))
            .args(["--listen", "127.0.0.1:0", "--threads", "2", "--data-dir"])
            .arg(mnt.join("data"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&script_log)?)
            .spawn()
            .context(
                "cannot run `unshare` (util-linux), needed to give the server a private tmpfs",
            )?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut confined = Confined {
            child,
            lines,
            page_size: 0,
            server_pid: None,
            exit: None,
            addr: None,
            http_addr: None,
            log,
            script_log,
        };
        let mounted = confined.next_line()?;
        if mounted.as_deref() != Some("flashsale-test: mounted") {
            let status =
                wait_child(&mut confined.child).map_or_else(|e| e.to_string(), |s| s.to_string());
            bail!(
                "cannot mount a private tmpfs for the server: these tests need root, \
                 `unshare --mount` and `mount -t tmpfs` (as on CI). unshare ended with {status}: {}",
                std::fs::read_to_string(&confined.script_log).unwrap_or_default()
            );
        }
        while confined.server_pid.is_none() {
            confined.read_one()?;
        }
        Ok(confined)
    }

    /// The next line of stdout, or `None` at its end; fails after [`WAIT`].
    fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => Ok(Some(line)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "nothing from the confined server for {WAIT:?}; its log:\n{}",
                self.log()
            ),
        }
    }

    /// Reads one line and records what it says.
    fn read_one(&mut self) -> anyhow::Result<()> {
        let Some(line) = self.next_line()? else {
            bail!(
                "the namespace script ended early ({:?}); its errors: {}\nthe server's log:\n{}",
                wait_child(&mut self.child),
                std::fs::read_to_string(&self.script_log).unwrap_or_default(),
                self.log()
            );
        };
        if let Some(page) = line.strip_prefix("flashsale-test: page size ") {
            self.page_size = page.parse()?;
        } else if let Some(pid) = line.strip_prefix("flashsale-test: server pid ") {
            self.server_pid = Some(pid.parse()?);
        } else if let Some(code) = line.strip_prefix("flashsale-test: server exit ") {
            self.exit = Some(code.parse()?);
        } else if let Some(addr) = line.strip_prefix("flashsale-server listening on ") {
            self.addr = Some(addr.trim().parse()?);
        } else if let Some(addr) = line.strip_prefix("flashsale-server http on ") {
            self.http_addr = Some(addr.trim().parse()?);
        }
        Ok(())
    }

    /// Waits until the server listens (and its HTTP front, with `http`).
    fn listening(&mut self, http: bool) -> anyhow::Result<()> {
        while self.addr.is_none() || (http && self.http_addr.is_none()) {
            if let Some(code) = self.exit {
                bail!(
                    "the server exited with {code} instead of starting; its log:\n{}",
                    self.log()
                );
            }
            self.read_one()?;
        }
        Ok(())
    }

    /// Waits for the server to exit and the script to finish (copying the
    /// data directory out, if asked); returns the server's exit code.
    fn exit_code(&mut self) -> anyhow::Result<i32> {
        while self.exit.is_none() {
            self.read_one()?;
        }
        let status = wait_child(&mut self.child)?;
        ensure!(
            status.success(),
            "the namespace script failed ({status}) after the server exited: {}",
            std::fs::read_to_string(&self.script_log).unwrap_or_default()
        );
        Ok(self.exit.unwrap_or_default())
    }

    /// Sends SIGTERM to the server and returns its exit code.
    fn terminate(&mut self) -> anyhow::Result<i32> {
        let pid = self.server_pid.context("no server pid")?;
        kill(Pid::from_raw(pid), Signal::SIGTERM)?;
        self.exit_code()
    }

    fn addr(&self) -> SocketAddr {
        self.addr.expect("the server listens")
    }

    fn http_addr(&self) -> SocketAddr {
        self.http_addr.expect("the server serves HTTP")
    }

    /// What the server wrote to stderr.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Confined {
    fn drop(&mut self) {
        if self.exit.is_none() {
            if let Some(pid) = self.server_pid {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits (bounded) for `child` to exit.
fn wait_child(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        ensure!(
            Instant::now() < deadline,
            "the namespace script did not end within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a server confined by `setup` that must fail to start; returns its
/// exit code and stderr.
fn failed_start(mnt: &Path, setup: &Setup<'_>, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let mut server = Confined::spawn(mnt, setup, args)?;
    let code = server.exit_code()?;
    ensure!(
        server.addr.is_none(),
        "the server listened although it should have refused to start; its log:\n{}",
        server.log()
    );
    Ok((code, server.log()))
}

/// The last line of a server's stderr: the error `main` prints on failure.
fn last_line(log: &str) -> &str {
    log.lines().last().unwrap_or_default()
}

/// Builds the server (a no-op when it is up to date), then reads the clock:
/// what a case takes, without the build.
fn built_then_now() -> Instant {
    workspace_bin("flashsale-server");
    Instant::now()
}

/// A fresh empty mount point and the directory around it.
fn mount_point() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    Ok((dir, mnt))
}

/// Sells tickets to users 1..=5 of sale `gig` on a normal host directory and
/// stops the server: a data directory holding a real log.
fn seed_with_five_wins(data: &Path) -> anyhow::Result<Vec<u8>> {
    let server = ServerProcess::start(data, &["--sale", "gig:100"])?;
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        for user in 1..=5u64 {
            let outcome = client.reserve("gig", user).await?;
            ensure!(
                matches!(outcome, ReserveOutcome::Won { .. }),
                "user {user}: {outcome:?}"
            );
        }
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(std::fs::read(data.join("wal.log"))?)
}

fn is_log_unavailable<T>(answer: &Result<T, ClientError>) -> bool {
    matches!(answer, Err(ClientError::Server(e)) if e.code == ErrorCode::LOG_UNAVAILABLE)
}

#[test]
fn read_only_data_directory_refuses_to_start() -> anyhow::Result<()> {
    let started = built_then_now();
    // A read-only file system with no data directory yet.
    let (_tmp, mnt) = mount_point()?;
    let data = mnt.join("data");
    let (code, log) = failed_start(
        &mnt,
        &Setup {
            size: "1m",
            read_only: true,
            ..Setup::default()
        },
        &["--sale", "gig:10"],
    )?;
    assert_eq!(code, 1, "exit code; log:\n{log}");
    let error = last_line(&log);
    assert!(
        error.starts_with("flashsale-server: cannot create data directory")
            && error.contains(&*data.to_string_lossy())
            && error.contains("Read-only file system"),
        "clear error naming the directory, got: {log}"
    );

    // A read-only file system holding an empty data directory.
    let (tmp, mnt) = mount_point()?;
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty)?;
    let (code, log) = failed_start(
        &mnt,
        &Setup {
            size: "1m",
            seed: Some(&empty),
            read_only: true,
            ..Setup::default()
        },
        &["--sale", "gig:10"],
    )?;
    assert_eq!(code, 1, "exit code; log:\n{log}");
    let error = last_line(&log);
    assert!(
        error.contains(&*mnt.join("data").to_string_lossy())
            && error.contains("Read-only file system"),
        "clear error naming the directory, got: {log}"
    );

    // A real log with five wins, on a file system remounted read-only: the
    // server refuses, and the log is left exactly as it was.
    let (tmp, mnt) = mount_point()?;
    let seed = tmp.path().join("seed");
    let before = seed_with_five_wins(&seed)?;
    let after = tmp.path().join("after");
    let (code, log) = failed_start(
        &mnt,
        &Setup {
            size: "1m",
            seed: Some(&seed),
            read_only: true,
            copy_out: Some(&after),
            ..Setup::default()
        },
        &[],
    )?;
    assert_eq!(code, 1, "exit code; log:\n{log}");
    let error = last_line(&log);
    assert!(
        error.starts_with("flashsale-server: cannot ")
            && error.contains(&*mnt.join("data").to_string_lossy())
            && error.contains("Read-only file system"),
        "clear error naming the directory, got: {log}"
    );
    assert_eq!(
        std::fs::read(after.join("wal.log"))?,
        before,
        "the log is untouched"
    );

    // The same log still serves its five tickets on a writable file system.
    let server = ServerProcess::start(&after, &[])?;
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        for user in 1..=5u64 {
            assert!(client.lookup("gig", user).await?.is_some(), "user {user}");
        }
        anyhow::Ok(())
    })?;
    server.stop()?;
    eprintln!("read-only cases took {:?}", started.elapsed());
    Ok(())
}

#[test]
fn full_disk_refuses_to_start() -> anyhow::Result<()> {
    let started = built_then_now();
    // No log yet, and no free page for its header.
    let (tmp, mnt) = mount_point()?;
    let after = tmp.path().join("after");
    let (code, log) = failed_start(
        &mnt,
        &Setup {
            size: "64k",
            free_pages: Some(0),
            copy_out: Some(&after),
            ..Setup::default()
        },
        &["--sale", "gig:10"],
    )?;
    assert_eq!(code, 1, "exit code; log:\n{log}");
    let error = last_line(&log);
    assert!(
        error.starts_with("flashsale-server: cannot open the log in")
            && error.contains(&*mnt.join("data").to_string_lossy())
            && error.contains("wal.log")
            && error.contains("No space left on device"),
        "clear error naming the log and the full disk, got: {log}"
    );
    // The log is created atomically: a failed creation leaves no `wal.log`,
    // so the next start (with room) creates it afresh.
    assert!(
        !after.join("wal.log").exists(),
        "no half-made log is left behind"
    );
    let server = ServerProcess::start(&after, &["--sale", "gig:10"])?;
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        assert_eq!(
            client.reserve("gig", 1).await?,
            ReserveOutcome::Won { ticket: 1 }
        );
        anyhow::Ok(())
    })?;
    server.stop()?;

    // A log whose last record is torn, on a full disk: recovery must keep the
    // torn bytes in a side file before cutting them, cannot, and so refuses
    // to start rather than discard them unseen, leaving the log as it was.
    let (tmp, mnt) = mount_point()?;
    let seed = tmp.path().join("seed");
    let whole = seed_with_five_wins(&seed)?;
    let torn = &whole[..whole.len() - 10];
    std::fs::write(seed.join("wal.log"), torn)?;
    let after = tmp.path().join("after");
    let (code, log) = failed_start(
        &mnt,
        &Setup {
            size: "64k",
            free_pages: Some(0),
            seed: Some(&seed),
            copy_out: Some(&after),
            ..Setup::default()
        },
        &[],
    )?;
    assert_eq!(code, 1, "exit code; log:\n{log}");
    let error = last_line(&log);
    assert!(
        error.starts_with("flashsale-server: cannot open the log in")
            && error.contains("wal.log.damaged-")
            && error.contains("No space left on device"),
        "clear error naming the side file and the full disk, got: {log}"
    );
    assert_eq!(
        std::fs::read(after.join("wal.log"))?,
        torn,
        "the log is untouched"
    );
    // With room again, recovery keeps the four whole wins and sets the torn
    // fifth aside.
    let server = ServerProcess::start(&after, &[])?;
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        for user in 1..=4u64 {
            assert!(client.lookup("gig", user).await?.is_some(), "user {user}");
        }
        assert_eq!(client.lookup("gig", 5).await?, None);
        anyhow::Ok(())
    })?;
    server.stop()?;
    let kept_aside = std::fs::read_dir(&after)?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("wal.log.damaged-")
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .any(|bytes| bytes == torn[torn.len() - (GIG_SOLD as usize - 10)..]);
    assert!(kept_aside, "the torn record is kept in a side file");
    eprintln!("full-disk cases took {:?}", started.elapsed());
    Ok(())
}

#[test]
fn disk_filling_up_stops_acknowledging_wins() -> anyhow::Result<()> {
    const FREE_PAGES: u64 = 2;
    let started = built_then_now();
    let (tmp, mnt) = mount_point()?;
    let copy = tmp.path().join("copy");
    let mut server = Confined::spawn(
        &mnt,
        &Setup {
            size: "1m",
            free_pages: Some(FREE_PAGES),
            copy_out: Some(&copy),
            ..Setup::default()
        },
        &["--sale", "gig:100000", "--http", "127.0.0.1:0", "--demo"],
    )?;
    server.listening(true)?;
    let (addr, web) = (server.addr(), server.http_addr());
    let headroom = FREE_PAGES * server.page_size;

    let rt = runtime();
    // What each user was told: acknowledged wins, and users answered with an error.
    let (won, refused) = rt.block_on(async {
        let token = move |user: u64| async move {
            let reply = http(
                web,
                "POST",
                "/demo/token",
                &[],
                &format!(r#"{{"user":{user}}}"#),
            )
            .await?;
            ensure!(
                reply.status == 200,
                "token: {} {}",
                reply.status,
                reply.text()
            );
            let token = reply.json()["token"]
                .as_str()
                .context("a token")?
                .to_owned();
            anyhow::Ok(format!("Bearer {token}"))
        };
        let healthz = http(web, "GET", "/healthz", &[], "").await?;
        assert_eq!(healthz.status, 200, "healthy before: {}", healthz.text());

        // One win over HTTP while there is room.
        let mut won: Vec<(u64, u32)> = Vec::new();
        let web_user = 1_000_000;
        let auth = token(web_user).await?;
        let reply = http(
            web,
            "POST",
            "/api/sales/gig/reserve",
            &[("authorization", &auth)],
            "",
        )
        .await?;
        assert_eq!(reply.status, 201, "HTTP win: {}", reply.text());
        won.push((
            web_user,
            u32::try_from(reply.json()["ticket"].as_u64().context("ticket")?)?,
        ));

        // Then distinct users one at a time until the disk is full.
        let client = client_config(addr).connect().await?;
        let mut first_refused = None;
        for user in 1..=5_000u64 {
            match client.reserve("gig", user).await {
                Ok(ReserveOutcome::Won { ticket }) => won.push((user, ticket)),
                answer if is_log_unavailable(&answer) => {
                    first_refused = Some(user);
                    break;
                }
                other => bail!("user {user} was told {other:?}"),
            }
        }
        let first_refused = first_refused.context("the disk never filled up")?;
        ensure!(
            won.len() > 10,
            "only {} wins before the disk was full",
            won.len()
        );
        // No more bytes were acknowledged than the free space could hold.
        let logged = FILE_HEADER + GIG_DEFINED + GIG_SOLD * won.len() as u64;
        ensure!(
            logged <= headroom && logged + GIG_SOLD > headroom - server.page_size,
            "{} wins acknowledged with {headroom} bytes free",
            won.len()
        );

        // From now on every new user is refused: some one at a time, some at once.
        let mut refused = vec![first_refused];
        for user in first_refused + 1..first_refused + 10 {
            let answer = client.reserve("gig", user).await;
            ensure!(
                is_log_unavailable(&answer),
                "user {user} after the failure: {answer:?}"
            );
            refused.push(user);
        }
        let burst: Vec<u64> = (10_000..10_050).collect();
        let answers =
            futures_util::future::join_all(burst.iter().map(|&u| client.reserve("gig", u))).await;
        for (&user, answer) in burst.iter().zip(&answers) {
            ensure!(
                is_log_unavailable(answer),
                "user {user} after the failure: {answer:?}"
            );
        }
        refused.extend(&burst);
        // The refused user's retry is refused too, and Lookup does not name a
        // ticket it does not know to be durable.
        let retry = client.reserve("gig", first_refused).await;
        ensure!(
            is_log_unavailable(&retry),
            "retry of user {first_refused}: {retry:?}"
        );
        let lookup = client.lookup("gig", first_refused).await;
        ensure!(
            matches!(lookup, Ok(None)) || is_log_unavailable(&lookup),
            "lookup of the refused user {first_refused}: {lookup:?}"
        );

        // Acknowledged wins are still known, answered without the log.
        for &(user, ticket) in &won {
            assert_eq!(
                client.lookup("gig", user).await?,
                Some(ticket),
                "user {user}"
            );
        }
        // A winner retrying never gets another ticket: reserve checks the log
        // first and refuses everyone once it has failed.
        let (user, ticket) = won[1];
        match client.reserve("gig", user).await {
            Ok(ReserveOutcome::AlreadyOwned { ticket: t }) => assert_eq!(t, ticket),
            answer => ensure!(
                is_log_unavailable(&answer),
                "winner {user} retrying: {answer:?}"
            ),
        }
        // The server stays up for everything that does not write.
        client.ping().await?;
        let status = client.status("gig").await?;
        ensure!(
            status.sold as usize >= won.len(),
            "status after the failure: {status:?}"
        );

        // The HTTP front says the same.
        let auth = token(2_000_000).await?;
        let reply = http(
            web,
            "POST",
            "/api/sales/gig/reserve",
            &[("authorization", &auth)],
            "",
        )
        .await?;
        assert_eq!(
            reply.status,
            503,
            "HTTP reserve after the failure: {}",
            reply.text()
        );
        assert_eq!(reply.json()["error"], "log_unavailable", "{}", reply.text());
        assert!(
            reply.json()["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            reply.text()
        );
        refused.push(2_000_000);
        let healthz = http(web, "GET", "/healthz", &[], "").await?;
        assert_eq!(
            healthz.status,
            503,
            "healthz after the failure: {}",
            healthz.text()
        );
        let auth = token(web_user).await?;
        let me = http(
            web,
            "GET",
            "/api/sales/gig/me",
            &[("authorization", &auth)],
            "",
        )
        .await?;
        assert_eq!(
            (me.status, me.json()["ticket"].as_u64()),
            (200, Some(u64::from(won[0].1)))
        );
        let sale = http(web, "GET", "/api/sales/gig", &[], "").await?;
        assert_eq!(sale.status, 200, "{}", sale.text());
        anyhow::Ok((won, refused))
    })?;
    let log = server.log();
    assert!(
        log.contains("write-ahead log failed") && log.contains("No space left on device"),
        "the failure is logged with its cause: {log}"
    );

    // SIGTERM: the server stops, but the log cannot be flushed, so shutdown
    // reports the failure and the exit code is 1, not 0.
    let code = server.terminate()?;
    let log = server.log();
    assert_eq!(code, 1, "exit code after a failed log; log:\n{log}");
    assert!(
        last_line(&log).starts_with("flashsale-server: cannot flush the log")
            && last_line(&log).contains("No space left on device"),
        "the exit names the failed log: {log}"
    );
    drop(server);
    let wal_len = std::fs::metadata(copy.join("wal.log"))?.len();
    let whole = FILE_HEADER + GIG_DEFINED + GIG_SOLD * won.len() as u64;
    assert!(
        wal_len <= headroom && wal_len < whole + GIG_SOLD,
        "log of {wal_len} bytes"
    );

    // Restart on a roomy file system with a copy of the log: every
    // acknowledged win is there with its ticket; a refused user may be there
    // (an error means "not known to be durable") but never on a sold ticket.
    let restarted = ServerProcess::start(&copy, &[])?;
    rt.block_on(async {
        let client = client_config(restarted.addr()).connect().await?;
        let mut tickets = HashSet::new();
        for &(user, ticket) in &won {
            assert_eq!(
                client.lookup("gig", user).await?,
                Some(ticket),
                "winner {user}"
            );
            assert_eq!(
                client.reserve("gig", user).await?,
                ReserveOutcome::AlreadyOwned { ticket }
            );
            assert!(tickets.insert(ticket), "ticket {ticket} twice");
        }
        let mut present = 0;
        for &user in &refused {
            if let Some(ticket) = client.lookup("gig", user).await? {
                assert!(
                    tickets.insert(ticket),
                    "refused user {user} holds a sold ticket {ticket}"
                );
                present += 1;
            }
        }
        let status = client.status("gig").await?;
        assert_eq!(status.sold as usize, won.len() + present, "{status:?}");
        // The sale goes on where it stopped.
        match client.reserve("gig", 3_000_000).await? {
            ReserveOutcome::Won { ticket } => assert!(tickets.insert(ticket)),
            other => bail!("after the restart: {other:?}"),
        }
        anyhow::Ok(())
    })?;
    let restart_log = restarted.log();
    restarted.stop()?;
    // A record cut short by the full disk is cut off at the restart and kept aside.
    if wal_len > whole {
        assert!(
            restart_log.contains("ends in damage"),
            "torn tail not reported: {restart_log}"
        );
        let side: Vec<_> = std::fs::read_dir(&copy)?
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("wal.log.damaged-")
            })
            .collect();
        assert_eq!(side.len(), 1, "one side file");
        assert_eq!(side[0].metadata()?.len(), wal_len - whole);
    }
    eprintln!(
        "{} wins acknowledged with {headroom} bytes free; log of {wal_len} bytes; took {:?}",
        won.len(),
        started.elapsed()
    );
    Ok(())
}
