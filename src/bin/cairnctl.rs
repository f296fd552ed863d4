//! cairnctl: cairn's etcdctl-compatible command line (DESIGN §1). The
//! commands live in `cairn::ctl` (src/ctl/mod.rs).

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(cairn::ctl::main(std::env::args().skip(1).collect()))
}
