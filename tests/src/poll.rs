//! Bounded waiting: for a child process to exit, and for a condition to
//! become true.
//!
//! A test that waits for something the server does asynchronously (a
//! closed connection leaving its count, a permit coming back) polls; each
//! helper here takes a count *and* a pause, so that no loop can spin
//! forever and none asserts a speed: a slow machine only takes more of the
//! attempts it is given.

use std::future::Future;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

/// Waits up to `timeout` for `child` to exit.
///
/// # Errors
///
/// When it is still running at the deadline (it is left running: the
/// caller decides whether to kill it), or its status cannot be read.
pub fn wait_for_exit(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(anyhow!("process did not exit within {timeout:?}"))
}

/// Runs `cmd` to completion within `timeout` with stdin and stdout closed,
/// returning its status and what it wrote to stderr. Killed if it overruns.
///
/// # Errors
///
/// When it cannot start or does not exit in time.
pub fn run_for_stderr(
    cmd: &mut Command,
    timeout: Duration,
) -> anyhow::Result<(ExitStatus, String)> {
    let (status, _, stderr) = run_reading(cmd, Stdio::null(), Stdio::null(), timeout)?;
    Ok((status, stderr))
}

/// Runs `cmd` to completion within `timeout` with `stdin`, returning its
/// status and what it wrote to stdout and to stderr. Killed if it overruns.
///
/// # Errors
///
/// When it cannot start or does not exit in time.
pub fn run_for_output(
    cmd: &mut Command,
    stdin: Stdio,
    timeout: Duration,
) -> anyhow::Result<(ExitStatus, String, String)> {
    run_reading(cmd, stdin, Stdio::piped(), timeout)
}

/// Runs `cmd` within `timeout` and reads what it writes to whichever of
/// stdout and stderr are pipes.
fn run_reading(
    cmd: &mut Command,
    stdin: Stdio,
    stdout: Stdio,
    timeout: Duration,
) -> anyhow::Result<(ExitStatus, String, String)> {
    let mut child = cmd
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    // Read while it runs: a full pipe would stall it.
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut s);
            }
            s
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = wait_for_exit(&mut child, timeout).inspect_err(|_| {
        let _ = child.kill();
        let _ = child.wait();
    })?;
    Ok((
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    ))
}

/// Calls `attempt` up to `tries` times, `pause` apart, until it returns
/// `Some`; `None` when every try came back empty.
///
/// # Errors
///
/// The first error an attempt returns.
pub fn poll<T>(
    tries: u32,
    pause: Duration,
    mut attempt: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Option<T>> {
    for i in 0..tries {
        if i > 0 {
            std::thread::sleep(pause);
        }
        if let Some(done) = attempt()? {
            return Ok(Some(done));
        }
    }
    Ok(None)
}

/// [`poll`] for an async `attempt`, pausing with the runtime's timer.
///
/// # Errors
///
/// The first error an attempt returns.
pub async fn poll_async<T, F, Fut>(
    tries: u32,
    pause: Duration,
    mut attempt: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    for i in 0..tries {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        if let Some(done) = attempt().await? {
            return Ok(Some(done));
        }
    }
    Ok(None)
}
