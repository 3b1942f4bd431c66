//! `flashsale-loadgen`: rehearses a sale's opening second against a server.
//!
//! Not built yet: the binary exists so the workspace layout is complete.

fn main() {
    eprintln!("flashsale-loadgen: not implemented yet");
    std::process::exit(2);
}
