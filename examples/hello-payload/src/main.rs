//! The `hello-payload` binary: the example payload of `src/lib.rs`, run as
//! its own program (as any service adopting the protocol would be).

use std::process::ExitCode;

fn main() -> ExitCode {
    // SAFETY: the first thing the program does: no other thread exists yet.
    unsafe { hello_payload::run(std::env::args().skip(1)) }
}
