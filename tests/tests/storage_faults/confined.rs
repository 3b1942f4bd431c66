//! The confined server: a real `flashsale-server` on a small tmpfs of its
//! own, prepared to fail in a known way.
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

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use flashsale_tests::workspace_bin;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a confined server may take to start, or to exit once told to.
const WAIT: Duration = Duration::from_secs(20);

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
pub(super) struct Setup<'a> {
    /// `size=` of the tmpfs.
    pub(super) size: &'a str,
    /// Fill the tmpfs with a filler file until only this many pages are free.
    pub(super) free_pages: Option<u64>,
    /// A data directory (on the host) copied in as the server's.
    pub(super) seed: Option<&'a Path>,
    /// Remount the tmpfs read-only before the server starts.
    pub(super) read_only: bool,
    /// Where (on the host) to copy the data directory after the server exits.
    pub(super) copy_out: Option<&'a Path>,
}

/// A server running on a private tmpfs in its own mount namespace.
pub(super) struct Confined {
    /// `unshare`, then the shell that runs the server.
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The tmpfs's page size, in bytes.
    pub(super) page_size: u64,
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
    pub(super) fn spawn(mnt: &Path, setup: &Setup<'_>, args: &[&str]) -> anyhow::Result<Confined> {
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
    pub(super) fn listening(&mut self, http: bool) -> anyhow::Result<()> {
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
    pub(super) fn terminate(&mut self) -> anyhow::Result<i32> {
        let pid = self.server_pid.context("no server pid")?;
        kill(Pid::from_raw(pid), Signal::SIGTERM)?;
        self.exit_code()
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr.expect("the server listens")
    }

    pub(super) fn http_addr(&self) -> SocketAddr {
        self.http_addr.expect("the server serves HTTP")
    }

    /// What the server wrote to stderr.
    pub(super) fn log(&self) -> String {
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
pub(super) fn failed_start(
    mnt: &Path,
    setup: &Setup<'_>,
    args: &[&str],
) -> anyhow::Result<(i32, String)> {
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
pub(super) fn last_line(log: &str) -> &str {
    log.lines().last().unwrap_or_default()
}

/// A fresh empty mount point and the directory around it.
pub(super) fn mount_point() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    Ok((dir, mnt))
}
