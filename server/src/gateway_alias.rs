//! `flashsale-server gateway ...`: the gateway's old spelling, kept for one
//! release.
//!
//! The gateway is its own binary now (`flashsale-gateway`), so the server
//! does not link the native client. The alias replaces this process with
//! that binary, found next to this one (as installed, or as built by cargo)
//! or else on `PATH`, with the same arguments and environment: signals,
//! stdout and the exit code are the gateway's own.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The gateway's binary name.
const GATEWAY: &str = "flashsale-gateway";

/// Whether the command line asks for the gateway.
pub(crate) fn requested() -> bool {
    std::env::args_os().nth(1).as_deref() == Some(OsStr::new("gateway"))
}

/// Runs `flashsale-gateway` with the arguments after `gateway`; returns only
/// if it cannot be started.
pub(crate) fn run() -> ExitCode {
    eprintln!(
        "flashsale-server: `flashsale-server gateway` is deprecated and will be removed; \
         run `{GATEWAY}` with the same flags"
    );
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let error = Command::new(gateway_path()).args(args).exec();
    eprintln!("flashsale-server: cannot run {GATEWAY}: {error}");
    ExitCode::FAILURE
}

/// `flashsale-gateway` beside this executable, or the bare name (a `PATH`
/// lookup) when there is none.
fn gateway_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(GATEWAY)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(GATEWAY))
}
