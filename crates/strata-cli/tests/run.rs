//! The exec driver end to end, as root, with real containers from a busybox image: every
//! test runs once with the native runtime (libcontainer in the shim) and once with runc.

mod common;

use common::Store;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A store with a busybox image whose containers use `runtime`.
fn setup(runtime: &str) -> Store {
    setup_on(runtime, "overlay2")
}

/// As [`setup`], with the store on `driver`.
fn setup_on(runtime: &str, driver: &'static str) -> Store {
    let s = Store::new(driver);
    s.busybox();
    s.runtime.set(runtime.to_string()).ok();
    s
}

trait RunExt {
    fn docker(&self, args: &[&str]) -> std::process::Output;
    fn exit_code(&self, args: &[&str]) -> i32;
    fn out(&self, args: &[&str]) -> String;
    fn cid(&self, name: &str) -> String;
    fn shim_state(&self, name: &str) -> serde_json::Value;
    fn assert_gone(&self, id: &str);
}

impl RunExt for Store {
    /// `strata ARGS` with `--runtime R` added after `run`/`create`.
    fn docker(&self, args: &[&str]) -> std::process::Output {
        let mut full: Vec<&str> = Vec::new();
        let rt = self.runtime.get().map(String::as_str).unwrap_or("native");
        for (i, a) in args.iter().enumerate() {
            full.push(a);
            if i == 0 && (*a == "run" || *a == "create") {
                full.push("--runtime");
                full.push(rt);
            }
        }
        self.run(&full)
    }

    fn exit_code(&self, args: &[&str]) -> i32 {
        self.docker(args).status.code().unwrap_or(-1)
    }

    fn out(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "strata {args:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn cid(&self, name: &str) -> String {
        self.ok(&["inspect", "--format", "{{.Id}}", name])
            .trim()
            .to_string()
    }

    fn shim_state(&self, name: &str) -> serde_json::Value {
        let id = self.cid(name);
        let text =
            std::fs::read(self.root().join("containers").join(id).join("state.json")).unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    /// Nothing of container `id` is left: no process in, nor the cgroup, nor a mount.
    fn assert_gone(&self, id: &str) {
        for ctl in ["pids", "memory", "freezer", "cpu"] {
            let p = Path::new("/sys/fs/cgroup")
                .join(ctl)
                .join("strata")
                .join(id);
            assert!(!p.exists(), "cgroup {} was left behind", p.display());
        }
        assert!(
            common::mounted_under(&self.root().join("mounts").join("containers").join(id))
                .is_empty(),
            "the container's root filesystem is still mounted"
        );
    }
}

fn inspect(s: &Store, name: &str, fmt: &str) -> String {
    s.ok(&["inspect", "--format", fmt, name]).trim().to_string()
}

/// `run --rm` returns once the container is gone (record, name, mounts); its shim
/// deletes the files right after. What a shim killed first leaves in the store's trash
/// goes with the next command that has the store to itself.
fn run_rm_leaves_no_files(s: Store) {
    s.out(&[
        "run",
        "--rm",
        "--name",
        "gone",
        "busybox",
        "sh",
        "-c",
        "echo data > /f; mkdir -p /a/b",
    ]);
    // The name is free at once.
    s.out(&["run", "--rm", "--name", "gone", "busybox", "true"]);
    let trash = s.root().join("trash");
    let entries = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !entries(&trash).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(entries(&trash), Vec::<String>::new(), "left in the trash");
    assert_eq!(entries(&s.root().join("containers")), Vec::<String>::new());
    assert_eq!(
        entries(&s.root().join("mounts").join("containers")),
        Vec::<String>::new()
    );
    // A root set aside still mounted (overlay2, vfs) was unmounted by the sweep.
    assert_eq!(common::mounted_under(s.dir.path()), Vec::<String>::new());
    // What a killed shim left in the trash, a mounted root included, goes with the next
    // process that has the store to itself; what was mounted there is untouched.
    let left = trash.join("0123456789abcdef");
    std::fs::create_dir_all(left.join("diff/etc")).unwrap();
    std::fs::write(left.join("diff/etc/hosts"), b"x").unwrap();
    let source = s.dir.path().join("bound");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("data"), b"keep").unwrap();
    std::fs::create_dir_all(left.join("merged")).unwrap();
    rustix::mount::mount_bind(&source, left.join("merged")).unwrap();
    s.ok(&["ps", "-a"]);
    assert!(!left.exists(), "the trash left by a killed shim stayed");
    assert_eq!(common::mounted_under(s.dir.path()), Vec::<String>::new());
    assert_eq!(std::fs::read(source.join("data")).unwrap(), b"keep");
}

/// Where new tree tops are costly (ext4 without a journal, as on these machines), a
/// container's run directory and mount point are spares made ahead (`SpareDirs`), moved
/// into place; the shim of a run makes new ones as its last act.
fn spares_become_run_trees(s: Store) {
    let pool = s.root().join("spares");
    let spares = || -> Vec<u64> {
        std::fs::read_dir(&pool)
            .map(|rd| rd.flatten().map(|e| e.metadata().unwrap().ino()).collect())
            .unwrap_or_default()
    };
    s.out(&["run", "--rm", "busybox", "true"]);
    let dir = std::fs::File::open(&pool).expect("the pool is made with the store");
    let marked =
        rustix::fs::ioctl_getflags(&dir).is_ok_and(|f| f.contains(rustix::fs::IFlags::TOPDIR));
    if !marked {
        // Tree tops cost no more than a rename here: no spares are made.
        assert!(spares().is_empty());
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while spares().len() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let made = spares();
    assert_eq!(made.len(), 4, "the shim filled the pool");
    let id = s
        .out(&["run", "-d", "busybox", "sleep", "100"])
        .trim()
        .to_string();
    let ino = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
    assert!(made.contains(&ino(s.root().join("containers").join(&id))));
    assert!(made.contains(&ino(s.root().join("mounts/containers").join(&id))));
    assert!(spares().len() < 4, "taken, not copied");
    s.ok(&["rm", "-f", &id]);
}

fn exit_codes(s: Store) {
    assert_eq!(s.exit_code(&["run", "--rm", "busybox", "true"]), 0);
    assert_eq!(
        s.exit_code(&["run", "--rm", "busybox", "sh", "-c", "exit 3"]),
        3
    );
    assert_eq!(
        s.exit_code(&["run", "--rm", "busybox", "no-such-command"]),
        127
    );
    assert_eq!(s.exit_code(&["run", "--rm", "busybox", "/etc"]), 126);
    // (PID 1 cannot be killed from inside its namespace: a child shell kills itself.)
    assert_eq!(
        s.exit_code(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "sh -c 'kill -9 $$'; exit $?"
        ]),
        137
    );
    // The engine refusing (no such image, bad flag) is 125, as docker's.
    assert_eq!(s.exit_code(&["run", "--rm", "no-such-image", "true"]), 125);
    assert_eq!(
        s.exit_code(&["run", "--rm", "--memory", "x", "busybox", "true"]),
        125
    );
    // --rm removed them all, the failed starts included.
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    // A container whose command fails to start stays "created", with the reason.
    assert_eq!(
        s.exit_code(&["run", "--name", "bad", "busybox", "no-such-command"]),
        127
    );
    assert_eq!(
        inspect(&s, "bad", "{{.State.Status}} {{.State.ExitCode}}"),
        "created 127"
    );
    assert!(inspect(&s, "bad", "{{.State.Error}}").contains("no-such-command"));
}

fn output_and_pid1(s: Store) {
    let o = s.out(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; echo $$",
    ]);
    assert_eq!(o, "out\n1\n");
    let o = s.docker(&["run", "--rm", "busybox", "sh", "-c", "echo err >&2"]);
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    // The user, the environment and the working directory come from the flags.
    let o = s.out(&[
        "run",
        "--rm",
        "-u",
        "app",
        "-e",
        "GREETING=hi",
        "-w",
        "/work",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g; id -G; echo $GREETING; pwd",
    ]);
    assert_eq!(o, "1000\n1000\n1000 2000\nhi\n/work\n");
    // HOME as docker (runc) sets it: the user's home in the image's passwd, `/` for a
    // user it lacks, and what the environment says when it says it.
    let home = |args: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["busybox", "sh", "-c", "echo $HOME"]);
        s.out(&a)
    };
    assert_eq!(home(&[]), "/root\n");
    assert_eq!(home(&["-u", "app"]), "/home/app\n");
    assert_eq!(home(&["-u", "4321"]), "/\n");
    assert_eq!(home(&["-u", "4321", "-e", "HOME=/x"]), "/x\n");
}

fn default_signal_dispositions(s: Store) {
    // SIGPIPE is not left ignored (Rust ignores it in the shim): `yes` dies of it quietly.
    let o = s.docker(&["run", "--rm", "busybox", "sh", "-c", "yes | head -n 1"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "y\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
}

fn stdin_with_i(s: Store) {
    let o = s.run_stdin(
        &[
            "run",
            "--rm",
            "-i",
            "--runtime",
            rt(&s),
            "busybox",
            "sh",
            "-c",
            "cat; echo done",
        ],
        b"hello\n",
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\ndone\n");
    // Without -i the container's stdin is empty.
    let o = s.run_stdin(
        &["run", "--rm", "--runtime", rt(&s), "busybox", "cat"],
        b"ignored\n",
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
}

fn rt(s: &Store) -> &str {
    s.runtime.get().map(String::as_str).unwrap_or("native")
}

/// A new pty: its master and its slave.
fn pty() -> (std::fs::File, std::fs::File) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills in two fds.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0);
    use std::os::fd::FromRawFd;
    // SAFETY: both fds were just opened and are owned here.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

/// `cmd` with its stdin, stdout and stderr on `tty`.
fn on_tty(cmd: &mut std::process::Command, tty: std::fs::File) -> &mut std::process::Command {
    cmd.stdin(Stdio::from(tty.try_clone().unwrap()))
        .stdout(Stdio::from(tty.try_clone().unwrap()))
        .stderr(Stdio::from(tty))
}

fn tty_through_a_pty(s: Store) {
    let (mut m, slave) = pty();
    let mut child = on_tty(
        &mut s.cmd(&[
            "run",
            "--rm",
            "-t",
            "--runtime",
            rt(&s),
            "busybox",
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo tty:yes; stty size",
        ]),
        slave,
    )
    .spawn()
    .unwrap();
    let status = child.wait().unwrap();
    // The slave ends are closed: read what the master holds (EIO at the end).
    rustix::fs::fcntl_setfl(&m, rustix::fs::OFlags::NONBLOCK).unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = m.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(status.success(), "{text}");
    assert!(text.contains("tty:yes\r\n"), "{text:?}");
}

fn memory_limit_oom(s: Store) {
    // dd's 64 MiB buffer does not fit under a 32 MiB limit (no swap: --memory-swap too).
    let code = s.exit_code(&[
        "run",
        "--name",
        "oom",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(code, 137);
    assert_eq!(
        inspect(&s, "oom", "{{.State.OOMKilled}} {{.State.ExitCode}}"),
        "true 137"
    );
    let id = s.cid("oom");
    s.ok(&["rm", "oom"]);
    s.assert_gone(&id);
}

fn pids_limit(s: Store) {
    let o = s.docker(&["run", "--rm", "--pids-limit", "10", "busybox", "sh", "-c", "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; for i in $(seq 20); do sleep 5 & done; wait"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.starts_with("10\n"), "{out}");
    assert!(err.contains("fork"), "the fork loop was not stopped: {err}");
    // The container cannot raise its own limit: its cgroup files are read-only to it.
    let raise = "f=/sys/fs/cgroup/pids/pids.max; [ -e $f ] || f=/sys/fs/cgroup/pids.max; \
                 echo 1000 > $f; cat $f";
    let o = s.docker(&[
        "run",
        "--rm",
        "--pids-limit",
        "10",
        "busybox",
        "sh",
        "-c",
        raise,
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "10\n");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn read_only_and_tmpfs(s: Store) {
    let o = s.docker(&["run", "--rm", "--read-only", "busybox", "touch", "/x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Read-only file system"));
    s.out(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch",
        "busybox",
        "touch",
        "/scratch/x",
    ]);
}

fn namespaces(s: Store) {
    // A private network namespace with only lo, up.
    let o = s.out(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert_eq!(o.lines().count(), 1, "{o}");
    assert!(o.contains(": lo:") && o.contains("UP"), "{o}");
    // Not the host's namespace, nor one two containers share.
    let netns = || s.out(&["run", "--rm", "busybox", "readlink", "/proc/self/ns/net"]);
    let (a, b) = (netns(), netns());
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(a.trim(), host.to_str().unwrap());
    assert_ne!(a, b);
    assert!(s
        .out(&[
            "run",
            "--rm",
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "127.0.0.1"
        ])
        .contains("1 packets received"));
    // Hostname: given, or the short ID; /etc/hostname and /etc/hosts as docker writes them.
    assert_eq!(
        s.out(&["run", "--rm", "--hostname", "box", "busybox", "hostname"]),
        "box\n"
    );
    // Without --hostname it is the short ID, in /etc/hostname too; --add-host lands in
    // /etc/hosts after docker's localhost lines.
    let o = s.out(&[
        "run",
        "--name",
        "h",
        "--add-host",
        "db:10.0.0.5",
        "busybox",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; grep -c localhost /etc/hosts; grep db /etc/hosts",
    ]);
    let short = &s.cid("h")[..12];
    assert_eq!(o, format!("{short}\n{short}\n2\n10.0.0.5\tdb\n"));
    s.ok(&["rm", "h"]);
    // --pid host sees the host's processes; a private one only its own.
    let own = s.out(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "ls /proc | grep -c '^[0-9]'",
    ]);
    assert!(own.trim().parse::<u32>().unwrap() <= 3, "{own}");
    let host = s.out(&[
        "run",
        "--rm",
        "--pid",
        "host",
        "busybox",
        "sh",
        "-c",
        "ls /proc | grep -c '^[0-9]'",
    ]);
    assert!(host.trim().parse::<u32>().unwrap() > 5, "{host}");
}

fn hardening(s: Store) {
    let o = s.out(&[
        "run",
        "--rm",
        "busybox",
        "grep",
        "-E",
        "^(CapEff|Seccomp):",
        "/proc/self/status",
    ]);
    assert_eq!(o, "CapEff:\t00000000a80425fb\nSeccomp:\t2\n");
    // Without the capabilities loading a filter takes (the native runtime lends them to
    // the process for the load), the filter is still in place and nothing is left over.
    for (drop, caps) in [
        (
            "ALL",
            "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000",
        ),
        (
            "SETPCAP",
            "CapPrm:\t00000000a80424fb\nCapEff:\t00000000a80424fb\nCapBnd:\t00000000a80424fb",
        ),
    ] {
        let o = s.out(&[
            "run",
            "--rm",
            "--cap-drop",
            drop,
            "busybox",
            "grep",
            "-E",
            "^(CapPrm|CapEff|CapBnd|Seccomp):",
            "/proc/self/status",
        ]);
        assert_eq!(o, format!("{caps}\nSeccomp:\t2\n"), "--cap-drop {drop}");
    }
    // Denied by seccomp or capabilities: mount, unshare, keyctl (busybox has no keyctl).
    for cmd in ["mount -t tmpfs t /tmp", "unshare -n true"] {
        let o = s.docker(&["run", "--rm", "busybox", "sh", "-c", cmd]);
        assert!(!o.status.success(), "{cmd} was allowed");
    }
    // Masked paths read as nothing; read-only ones refuse writes; /sys is read-only.
    let o = s.docker(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "cat /proc/kcore | wc -c; ls /sys/firmware | wc -l",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "0\n0\n");
    assert!(!s
        .docker(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo 1 > /proc/sys/kernel/panic"
        ])
        .status
        .success());
    assert!(!s
        .docker(&["run", "--rm", "busybox", "touch", "/sys/x"])
        .status
        .success());
    // Only docker's default devices.
    let devs = s.out(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "ls /dev | sort | tr '\\n' ' '",
    ]);
    for d in ["full", "null", "ptmx", "random", "tty", "urandom", "zero"] {
        assert!(devs.contains(d), "{devs}");
    }
    assert!(!devs.contains("sda") && !devs.contains("loop"), "{devs}");
    // --cap-drop, --cap-add, --privileged, no-new-privileges, seccomp=unconfined.
    let o = s.out(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "busybox",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert_eq!(o, "CapEff:\t0000000000001000\n");
    let o = s.out(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; mount -t tmpfs t /tmp && echo mounted",
    ]);
    assert_eq!(o, "Seccomp:\t0\nmounted\n");
    // Privileged, its cgroups are writable, as docker's.
    let o = s.out(&[
        "run",
        "--rm",
        "--privileged",
        "--pids-limit",
        "10",
        "busybox",
        "sh",
        "-c",
        "f=/sys/fs/cgroup/pids/pids.max; [ -e $f ] || f=/sys/fs/cgroup/pids.max; \
         echo 20 > $f && cat $f",
    ]);
    assert_eq!(o, "20\n");
    let o = s.out(&[
        "run",
        "--rm",
        "--security-opt",
        "no-new-privileges",
        "busybox",
        "grep",
        "NoNewPrivs",
        "/proc/self/status",
    ]);
    assert_eq!(o, "NoNewPrivs:\t1\n");
    let o = s.out(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "grep",
        "Seccomp:",
        "/proc/self/status",
    ]);
    assert_eq!(o, "Seccomp:\t0\n");
    // A working directory under /proc is refused before anything runs (CVE-2024-21626).
    let e = s.fails(&["run", "--rm", "-w", "/proc/self/fd/7", "busybox", "true"]);
    assert!(e.contains("/proc"), "{e}");
}

/// A profile in docker's format with SCMP_ACT_NOTIFY and a listener path: the runtime hands
/// the notification fd, with the container's state, to the agent listening there, and the
/// container runs under the rest of the profile.
fn seccomp_notify_reaches_the_listener(s: Store) {
    let sock = s.dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let agent = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut msg = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut msg).unwrap();
        String::from_utf8_lossy(&msg).into_owned()
    });
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "strata-test",
        "syscalls": [
            {"names": ["sethostname"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO"}
        ]
    });
    let path = s.file("notify.json", profile.to_string().as_bytes());
    let opt = format!("seccomp={}", path.display());
    let o = s.out(&[
        "run",
        "--rm",
        "--name",
        "notified",
        "--security-opt",
        &opt,
        "busybox",
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; unshare -n true 2>/dev/null || echo refused",
    ]);
    assert_eq!(o, "Seccomp:\t2\nrefused\n");
    let state = agent.join().unwrap();
    assert!(
        state.contains("strata-test") && state.contains("seccompFd"),
        "the agent got: {state}"
    );
}

fn exec_into_running(s: Store) {
    s.out(&[
        "run", "-d", "--name", "c", "-e", "A=1", "busybox", "sleep", "1000",
    ]);
    // An exec'd process is as confined as the container's init.
    assert_eq!(
        s.out(&[
            "exec",
            "c",
            "grep",
            "-E",
            "^(CapEff|CapBnd|Seccomp):",
            "/proc/self/status"
        ]),
        "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nSeccomp:\t2\n"
    );
    assert_eq!(
        s.out(&[
            "exec",
            "c",
            "sh",
            "-c",
            "echo $A; test $$ -gt 1 && test $$ -lt 100 && echo in-pid-ns"
        ]),
        "1\nin-pid-ns\n"
    );
    assert_eq!(s.exit_code(&["exec", "c", "sh", "-c", "exit 5"]), 5);
    assert_eq!(
        s.out(&[
            "exec",
            "-u",
            "app",
            "-e",
            "B=2",
            "-w",
            "/tmp",
            "c",
            "sh",
            "-c",
            "id -u; echo $B; pwd"
        ]),
        "1000\n2\n/tmp\n"
    );
    assert_eq!(s.exit_code(&["exec", "c", "no-such-command"]), 127);
    let o = s.run_stdin(&["exec", "-i", "c", "cat"], b"piped\n");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "piped\n");
    s.out(&["exec", "-d", "c", "sh", "-c", "echo detached > /tmp/d"]);
    let mut seen = String::new();
    for _ in 0..100 {
        seen = s.out(&["exec", "c", "cat", "/tmp/d"]);
        if !seen.is_empty() {
            break;
        }
    }
    assert_eq!(seen, "detached\n");
    // The exec'd processes are in the container's pid namespace and cgroup.
    let top = s.out(&["top", "c"]);
    assert!(top.contains("sleep 1000"), "{top}");
    let id = s.cid("c");
    s.ok(&["rm", "-f", "c"]);
    s.assert_gone(&id);
}

fn stop_escalates_and_restart_keeps_layer(s: Store) {
    // PID 1 ignores SIGTERM it has no handler for: stop must escalate to SIGKILL.
    s.out(&[
        "run",
        "-d",
        "--name",
        "c",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data; exec sleep 1000",
    ]);
    s.ok(&["stop", "-t", "1", "c"]);
    assert_eq!(
        inspect(&s, "c", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    let id = s.cid("c");
    s.assert_gone(&id);
    // Started again, it has the same writable layer.
    s.ok(&["start", "c"]);
    assert_eq!(s.out(&["exec", "c", "cat", "/data"]), "kept\n");
    s.ok(&["restart", "-t", "0", "c"]);
    assert_eq!(s.out(&["exec", "c", "cat", "/data"]), "kept\n");
    s.ok(&["kill", "c"]);
    assert_eq!(s.ok(&["wait", "c"]), "137\n");
    s.ok(&["rm", "c"]);
}

fn logs_follow_and_detach(s: Store) {
    s.out(&[
        "run",
        "-d",
        "--name",
        "l",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo bad >&2",
    ]);
    // The CLI that started it is gone; the container goes on under its shim.
    let st = s.shim_state("l");
    assert_eq!(st["status"], "running");
    let o = s.ok(&["logs", "-f", "l"]);
    assert_eq!(o, "line1\nline2\nline3\n");
    let o = s.run(&["logs", "l"]);
    assert_eq!(String::from_utf8_lossy(&o.stderr), "bad\n");
    assert_eq!(s.ok(&["logs", "--tail", "1", "l"]), "");
    let o = s.ok(&["logs", "-t", "l"]);
    assert!(o.lines().all(|l| l.contains('T') && l.contains('Z')), "{o}");
    assert_eq!(s.ok(&["wait", "l"]), "0\n");
    let ps = s.ok(&["ps", "-a", "--format", "{{.Status}}"]);
    assert!(ps.starts_with("Exited (0)"), "{ps}");
}

fn shim_killed_is_noticed(s: Store) {
    s.out(&["run", "-d", "--name", "k", "busybox", "sleep", "1000"]);
    let id = s.cid("k");
    assert!(s.ok(&["ps", "--format", "{{.Status}}"]).starts_with("Up"));
    let shim = s.shim_state("k")["shim_pid"].as_i64().unwrap() as i32;
    // SAFETY: a plain kill(2).
    unsafe { libc::kill(shim, libc::SIGKILL) };
    for _ in 0..200 {
        if !Path::new(&format!("/proc/{shim}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ps = s.ok(&["ps", "-a", "--format", "{{.Status}}"]);
    assert!(ps.starts_with("Exited (137)"), "{ps}");
    s.assert_gone(&id);
    s.ok(&["rm", "k"]);
}

/// A container that lets go of its output and keeps running (a daemon closing its stdio)
/// leaves its shim idle: the shim waits on the container, not on pipes at their end.
fn shim_idles_once_output_ends(s: Store) {
    s.out(&[
        "run",
        "-d",
        "--name",
        "quiet",
        "busybox",
        "sh",
        "-c",
        "exec >/dev/null 2>&1; sleep 1000",
    ]);
    let shim = s.shim_state("quiet")["shim_pid"].as_i64().unwrap();
    // utime + stime, in clock ticks (fields 14 and 15 of /proc/PID/stat).
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{shim}/stat")).unwrap();
        let f: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|v| v.parse().unwrap())
            .collect();
        f[0] + f[1]
    };
    // Time for the shell to close its ends, then a second for the shim to spend.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = cpu();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let spent = cpu() - before;
    // A shim polling the ended pipes spins: a whole second of CPU (100 ticks).
    assert!(spent < 20, "the shim used {spent} ticks of CPU in a second");
    assert!(s.ok(&["ps", "--format", "{{.Status}}"]).starts_with("Up"));
    s.ok(&["rm", "-f", "quiet"]);
}

/// `exec -t` of a process that lets go of its terminal and keeps running: the relay
/// between the pty and the CLI waits for it instead of spinning on the ended pty.
fn exec_tty_relay_idles_once_the_pty_ends(s: Store) {
    s.out(&["run", "-d", "--name", "t", "busybox", "sleep", "1000"]);
    let (_master, slave) = pty();
    let children_cpu = || {
        // SAFETY: getrusage fills in the struct.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) }, 0);
        let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
        ms(u.ru_utime) + ms(u.ru_stime)
    };
    let before = children_cpu();
    let status = on_tty(
        &mut s.cmd(&[
            "exec",
            "-t",
            "t",
            "sh",
            "-c",
            "exec >/dev/null 2>&1 </dev/null; sleep 1",
        ]),
        slave,
    )
    .status()
    .unwrap();
    assert!(status.success());
    // The CLI and the relay it waited for; spinning, the relay alone spent the second.
    let spent = children_cpu() - before;
    assert!(
        spent < 300,
        "exec -t used {spent} ms of CPU over a 1 s sleep"
    );
    s.ok(&["rm", "-f", "t"]);
}

/// A shim killed between reporting its container's exit and deleting the runtime's state
/// leaves that state and the cgroups behind: the next reader of the container deletes them,
/// and the container starts again.
fn shim_killed_after_reporting_the_exit(s: Store) {
    s.out(&["run", "-d", "--name", "x", "busybox", "sleep", "1000"]);
    let id = s.cid("x");
    let st = s.shim_state("x");
    let pid = |k: &str| st[k].as_i64().unwrap() as i32;
    let gone = |p: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
    };
    for p in [pid("shim_pid"), pid("pid")] {
        // SAFETY: a plain kill(2).
        unsafe { libc::kill(p, libc::SIGKILL) };
        for _ in 0..200 {
            if gone(p) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(gone(p), "process {p} survived SIGKILL");
    }
    // The shim had recorded the exit: that is what it writes before it reports it.
    let file = s.root().join("containers").join(&id).join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    state["status"] = "exited".into();
    std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
    let cgroup = Path::new("/sys/fs/cgroup/pids/strata").join(&id);
    assert!(
        cgroup.exists(),
        "the test needs the run's cgroup still there"
    );
    let ps = s.ok(&["ps", "-a", "--format", "{{.Status}}"]);
    assert!(ps.starts_with("Exited (0)"), "{ps}");
    s.assert_gone(&id);
    s.ok(&["start", "x"]);
    assert!(s.ok(&["ps", "--format", "{{.Status}}"]).starts_with("Up"));
    s.ok(&["rm", "-f", "x"]);
    s.assert_gone(&id);
}

fn pause_and_stats(s: Store) {
    s.out(&[
        "run", "-d", "--name", "p", "--memory", "64m", "busybox", "sleep", "1000",
    ]);
    s.ok(&["pause", "p"]);
    assert!(s
        .ok(&["ps", "--format", "{{.Status}}"])
        .contains("(Paused)"));
    assert_eq!(inspect(&s, "p", "{{.State.Status}}"), "paused");
    s.ok(&["unpause", "p"]);
    assert_eq!(inspect(&s, "p", "{{.State.Status}}"), "running");
    let st = s.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}} {{.PIDs}}",
    ]);
    assert!(
        st.starts_with("p ") && st.contains("/ 64MiB") && st.trim().ends_with(" 1"),
        "{st}"
    );
    assert!(s.fails(&["rm", "p"]).contains("running"));
    s.ok(&["rm", "-f", "p"]);
}

fn foreground_cli_killed(s: Store) {
    // The foreground CLI takes the cleanup over from the shim; killed, it leaves the
    // cleanup to the shim, and nothing stays mounted.
    let mut cli = s
        .cmd(&[
            "run",
            "--runtime",
            rt(&s),
            "--name",
            "f",
            "busybox",
            "sleep",
            "1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let state = s.root().join("containers");
    for _ in 0..500 {
        let running = std::fs::read_dir(&state)
            .ok()
            .and_then(|mut d| d.next())
            .is_some_and(|e| {
                std::fs::read_to_string(e.unwrap().path().join("state.json"))
                    .is_ok_and(|t| t.contains("\"running\""))
            });
        if running {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    cli.kill().unwrap();
    cli.wait().unwrap();
    let id = s.cid("f");
    s.ok(&["stop", "-t", "0", "f"]);
    assert_eq!(
        inspect(&s, "f", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    s.assert_gone(&id);
    s.ok(&["rm", "f"]);
}

fn foreground_signals_are_proxied(s: Store) {
    // SIGTERM to a foreground `run` reaches the container's process (docker's sig-proxy).
    use std::io::BufRead;
    let mut cli = s
        .cmd(&[
            "run",
            "--runtime",
            rt(&s),
            "--name",
            "sp",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 9' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(cli.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: a plain kill(2) of our child.
    unsafe { libc::kill(cli.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(cli.wait().unwrap().code(), Some(9));
    assert_eq!(rest, "got TERM\n");
    s.ok(&["rm", "sp"]);
}

fn restart_policy(s: Store) {
    // on-failure:2 runs the command three times in all, then leaves it exited.
    s.out(&[
        "run",
        "-d",
        "--name",
        "r",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run $(readlink /proc/self/ns/net) $(ip -o link | grep -c 'lo.*UP'); exit 4",
    ]);
    assert_eq!(s.ok(&["wait", "r"]), "4\n");
    for _ in 0..300 {
        if inspect(&s, "r", "{{.State.Status}}") == "exited"
            && s.ok(&["logs", "r"]).lines().count() == 3
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        inspect(
            &s,
            "r",
            "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}"
        ),
        "exited 2 4"
    );
    // Each run gets a new network namespace (a freed one's number may come back later),
    // with lo up.
    let logs = s.ok(&["logs", "r"]);
    let runs: Vec<Vec<&str>> = logs.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(runs.len(), 3, "{logs}");
    for (i, f) in runs.iter().enumerate() {
        assert!(
            f[0] == "run" && f[1].starts_with("net:[") && f[2] == "1",
            "{logs}"
        );
        assert!(i == 0 || runs[i - 1][1] != f[1], "{logs}");
    }
    // --restart with --rm is refused, as docker.
    assert!(s
        .fails(&["run", "--rm", "--restart", "always", "busybox", "true"])
        .contains("Conflicting options"));
    s.ok(&["rm", "r"]);
}

fn attach_and_start_attached(s: Store) {
    // start -a streams the output and exits with the container's code.
    s.out(&[
        "create",
        "--name",
        "a",
        "busybox",
        "sh",
        "-c",
        "echo hello; exit 2",
    ]);
    let o = s.run(&["start", "-a", "a"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n");
    // attach to a running container: its stdin, its output, its exit code.
    s.out(&[
        "run",
        "-d",
        "-i",
        "--name",
        "b",
        "busybox",
        "sh",
        "-c",
        "read x; echo got $x; exit 3",
    ]);
    let o = s.run_stdin(&["attach", "b"], b"ping\n");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got ping\n");
    assert_eq!(o.status.code(), Some(3));
    s.ok(&["rm", "a", "b"]);
}

fn resource_limits(s: Store) {
    let o = s.out(&[
        "run", "--rm", "--cpus", "0.5", "--cpu-shares", "512", "--cpuset-cpus", "0",
        "--memory", "64m", "--memory-reservation", "32m", "--blkio-weight", "300",
        "busybox", "sh", "-c",
        "cd /sys/fs/cgroup; cat cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu/cpu.shares cpuset/cpuset.cpus memory/memory.limit_in_bytes memory/memory.soft_limit_in_bytes; cat blkio/blkio.weight 2>/dev/null || cat blkio/blkio.bfq.weight 2>/dev/null || echo 300",
    ]);
    assert_eq!(
        o,
        format!("50000\n100000\n512\n0\n{}\n{}\n300\n", 64 << 20, 32 << 20)
    );
    // Bad values are refused before anything runs.
    assert!(s
        .fails(&["run", "--rm", "--memory", "lots", "busybox", "true"])
        .contains("--memory"));
    assert!(s
        .fails(&["run", "--rm", "--blkio-weight", "5", "busybox", "true"])
        .contains("10 to 1000"));
    assert!(s
        .fails(&["run", "--rm", "--cap-add", "NOPE", "busybox", "true"])
        .contains("NOPE"));
    assert!(s
        .fails(&["run", "--rm", "--network", "bridge", "busybox", "true"])
        .contains("network"));
}

fn init_as_pid1(s: Store) {
    // tini is PID 1; the command runs as its child; the exit code passes through.
    let o = s.out(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; test $$ -gt 1 && echo child",
    ]);
    assert_eq!(o, "/sbin/docker-init -- sh -c cat /proc/1/cmdline | tr '\\0' ' '; echo; test $$ -gt 1 && echo child \nchild\n");
    assert_eq!(
        s.exit_code(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 3"]),
        3
    );
    // A stop signal reaches the command through the init (busybox sleep dies of SIGTERM).
    s.out(&[
        "run", "-d", "--init", "--name", "i", "busybox", "sleep", "1000",
    ]);
    // (once the init runs: a signal that lands before the runtime's exec is lost)
    for _ in 0..100 {
        if s.out(&["exec", "i", "cat", "/proc/1/cmdline"])
            .starts_with("/sbin/docker-init")
        {
            break;
        }
    }
    s.ok(&["stop", "-t", "10", "i"]);
    assert_eq!(inspect(&s, "i", "{{.State.ExitCode}}"), "143");
    // The init binary is read-only in the container.
    s.ok(&["rm", "i"]);
    let o = s.docker(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "echo x >> /sbin/docker-init",
    ]);
    assert!(!o.status.success());
}

fn run_test(f: fn(Store), runtime: &str, driver: &'static str) {
    if runtime == "runc" && Command::new("runc").arg("--version").output().is_err() {
        panic!("runc is not installed: scripts/deps.sh installs it");
    }
    f(setup_on(runtime, driver));
}

macro_rules! runtime_tests {
    ($module:ident, $runtime:literal, $driver:literal: $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    super::run_test(super::$name, $runtime, $driver);
                }
            )*
        }
    };
}

macro_rules! all_tests {
    ($($module:ident = $runtime:literal on $driver:literal),*) => {
        $(runtime_tests!($module, $runtime, $driver:
            run_rm_leaves_no_files, spares_become_run_trees, exit_codes, output_and_pid1, stdin_with_i, tty_through_a_pty, memory_limit_oom,
            pids_limit, read_only_and_tmpfs, namespaces, hardening, exec_into_running,
            stop_escalates_and_restart_keeps_layer, logs_follow_and_detach,
            shim_killed_is_noticed, shim_killed_after_reporting_the_exit, shim_idles_once_output_ends,
            exec_tty_relay_idles_once_the_pty_ends, pause_and_stats,
            foreground_cli_killed, restart_policy,
            attach_and_start_attached, resource_limits, init_as_pid1,
            default_signal_dispositions, foreground_signals_are_proxied,
            seccomp_notify_reaches_the_listener,
        );)*
    };
}

all_tests!(
    native = "native" on "overlay2",
    runc = "runc" on "overlay2",
    // Containers whose root is the userspace union (a FUSE server per container).
    native_on_aufs = "native" on "aufs",
    // Containers whose root is ext4 on a thin device of the userspace pool.
    native_on_devicemapper = "native" on "devicemapper"
);

/// The command lines of the processes started for store `s` (they inherit its
/// `STRATA_ROOT`).
fn processes_of(s: &Store) -> Vec<String> {
    let mark = format!("STRATA_ROOT={}", s.root().display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("environ"))
                .is_ok_and(|e| e.split(|b| *b == 0).any(|v| v == mark.as_bytes()))
        })
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}

/// `start` spawns the shim before it mounts the root and writes the bundle, and lets it
/// go only then. A start refused in between leaves no shim process, mount or cgroup, and
/// the container can start once what it needed is there.
#[test]
fn a_start_refused_before_the_shim_goes_leaves_nothing() {
    let s = setup("native");
    s.ok(&["create", "--name", "other", "busybox", "sleep", "1000"]);
    s.ok(&[
        "create",
        "--name",
        "joiner",
        "--network",
        "container:other",
        "busybox",
        "true",
    ]);
    let id = s.cid("joiner");
    let e = s.fails(&["start", "joiner"]);
    assert!(
        e.contains("cannot join network of a non running container"),
        "{e}"
    );
    assert_eq!(inspect(&s, "joiner", "{{.State.Status}}"), "created");
    let left = processes_of(&s);
    assert!(
        left.is_empty(),
        "a process of the refused start remains: {left:?}"
    );
    s.assert_gone(&id);
    // `run` starts its shim before it creates the container: one whose create fails
    // leaves no process either.
    let e = s.fails(&["run", "--rm", "no-such-image:1", "true"]);
    assert!(e.contains("No such image"), "{e}");
    let left = processes_of(&s);
    assert!(
        left.is_empty(),
        "a process of the failed run remains: {left:?}"
    );
    s.ok(&["start", "other"]);
    // What the checks above look for: a running container's shim is found so.
    let shims = processes_of(&s);
    assert!(
        shims.iter().any(|c| c.starts_with("strata-shim start")),
        "{shims:?}"
    );
    assert_eq!(s.exit_code(&["start", "-a", "joiner"]), 0);
    s.ok(&["rm", "-f", "joiner", "other"]);
}

/// `run` does not wait for its shim's exec: a shim binary that cannot be executed is
/// reported from what the forked child says, with docker's engine-error code, and
/// nothing of the run remains.
#[test]
fn a_shim_that_cannot_be_executed_is_reported() {
    let s = setup("native");
    let not_a_program = s.file("not-a-program", b"#!/no/such/interpreter\n");
    let out = s
        .cmd(&["run", "--rm", "busybox", "true"])
        .env("STRATA_SHIM", &not_a_program)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("could not execute the strata-shim binary"),
        "{err}"
    );
    assert!(s.ok(&["ps", "-a", "-q"]).trim().is_empty());
    let left = processes_of(&s);
    assert!(left.is_empty(), "a process of the run remains: {left:?}");
    s.check_clean();
}

/// The CPUs a process may run on (`Cpus_allowed_list` in its /proc status).
fn cpus_allowed(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in {status:?}"))
        .trim()
        .to_string()
}

/// `run` moves its shim to another CPU than its own while both work (see
/// `strata_exec::spawn::CpuPlacement`); the shim gives its starter's set back before the
/// container is made, so the container runs where `run` may, as under docker.
#[test]
fn a_container_runs_on_the_cpus_its_run_may_use() {
    let s = setup("native");
    let ours = cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let status = ["run", "--rm", "busybox", "cat", "/proc/self/status"];
    assert_eq!(cpus_allowed(&s.ok(&status)), ours);
    // Started on CPU 0 only, it runs on CPU 0 only.
    let mut on_0 = s.cmd(&status);
    // SAFETY: sched_setaffinity on a local set, in the child before its exec.
    unsafe {
        on_0.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = on_0.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(cpus_allowed(&String::from_utf8_lossy(&out.stdout)), "0");
    s.check_clean();
}

#[test]
fn info_lists_runtimes_and_added_ones_run() {
    let s = setup("native");
    s.out(&["run", "-d", "--name", "up", "busybox", "sleep", "1000"]);
    let info = s.ok(&["--add-runtime", "other=/usr/sbin/runc", "info"]);
    assert!(info.contains(" Runtimes: native runc other\n"), "{info}");
    assert!(info.contains(" Default Runtime: native\n"), "{info}");
    assert!(info.contains("  Running: 1\n"), "{info}");
    let o = s.ok(&[
        "--add-runtime",
        "other=/usr/sbin/runc",
        "run",
        "--rm",
        "--runtime",
        "other",
        "busybox",
        "echo",
        "via other",
    ]);
    assert_eq!(o, "via other\n");
    let e = s.fails(&["run", "--rm", "--runtime", "nope", "busybox", "true"]);
    assert!(e.contains("unknown or invalid runtime name: nope"), "{e}");
    s.ok(&["rm", "-f", "up"]);
}
