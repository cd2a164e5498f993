//! The shim binary: `strata-shim start DIR` runs a container, `strata-shim exec FILE` one
//! more process in it. Started by strata only (from a sealed memfd copy).

use std::path::Path;

fn main() {
    strata_exec::shim::close_inherited_fds();
    let args: Vec<String> = std::env::args().collect();
    let code = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("start"), Some(dir)) => strata_exec::shim::start(Path::new(dir)),
        (Some("exec"), Some(file)) => strata_exec::exec::exec(Path::new(file)),
        _ => {
            eprintln!("strata-shim is started by strata: strata-shim start DIR | exec FILE");
            2
        }
    };
    std::process::exit(code);
}
