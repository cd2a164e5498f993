//! The shim binary: `strata-shim start [--private-net]` runs and monitors the container
//! its go pipe names (making its network namespace early with `--private-net`; `create DIR` is
//! its native create step), `strata-shim exec FILE` one more process in it. Started by
//! strata only; what enters a container runs from a read-only view of this binary (see
//! `spawn`).

use std::path::Path;

fn main() {
    // Run from a memfd, the process would otherwise be named after its fd number.
    let _ = rustix::thread::set_name(c"strata-shim");
    strata_exec::shim::close_inherited_fds();
    let args: Vec<String> = std::env::args().collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = match args[1..] {
        ["start"] => strata_exec::shim::start(false),
        ["start", "--private-net"] => strata_exec::shim::start(true),
        ["create", dir] => strata_exec::shim::create(Path::new(dir)),
        ["exec", file] => strata_exec::exec::exec(Path::new(file)),
        _ => {
            eprintln!(
                "strata-shim is started by strata: strata-shim start [--private-net] | create DIR | exec FILE"
            );
            2
        }
    };
    std::process::exit(code);
}
