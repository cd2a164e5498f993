//! Thin devices as files through the FUSE server, with real loop devices and ext4 on them
//! (as root).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_strata-thinpool");

struct Served {
    dir: tempfile::TempDir,
    server: Option<Child>,
    loops: Vec<String>,
    mounts: Vec<PathBuf>,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

impl Served {
    fn new() -> Served {
        let dir = tempfile::Builder::new()
            .prefix("strata-thinpool-test-")
            .tempdir()
            .unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        sh(
            BIN,
            &[
                "format",
                &p("meta"),
                &p("data"),
                "65536",
                &(8u64 << 30).to_string(),
                &(64u64 << 20).to_string(),
            ],
        );
        fs::create_dir(dir.path().join("dev")).unwrap();
        let mut s = Served {
            dir,
            server: None,
            loops: Vec::new(),
            mounts: Vec::new(),
        };
        s.start();
        s
    }

    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    fn start(&mut self) {
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--metadata")
            .arg(self.path("meta"))
            .arg("--data")
            .arg(self.path("data"))
            .arg("--sizes")
            .arg(self.path("sizes"))
            .arg(self.path("dev"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(child);
        for _ in 0..200 {
            if self.path("dev/.pool").exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the server did not come up");
    }

    fn status(&self, key: &str) -> u64 {
        let s = fs::read_to_string(self.path("dev/.pool")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{key} in {s}"))
            .parse()
            .unwrap()
    }

    fn attach(&mut self, dev: &str) -> String {
        let l = sh(
            "losetup",
            &[
                "-f",
                "--show",
                "--direct-io=on",
                self.path(&format!("dev/{dev}")).to_str().unwrap(),
            ],
        )
        .trim()
        .to_string();
        self.loops.push(l.clone());
        l
    }

    fn mount(&mut self, lo: &str, name: &str) -> PathBuf {
        let m = self.path(name);
        fs::create_dir_all(&m).unwrap();
        sh("mount", &["-o", "discard", lo, m.to_str().unwrap()]);
        self.mounts.push(m.clone());
        m
    }

    fn release(&mut self) {
        for m in self.mounts.drain(..).rev() {
            let _ = Command::new("umount").arg(&m).status();
        }
        for l in self.loops.drain(..) {
            let _ = Command::new("losetup").args(["-d", &l]).status();
        }
    }

    fn stop(&mut self) {
        self.release();
        let _ = Command::new("umount").arg(self.path("dev")).status();
        if let Some(mut c) = self.server.take() {
            c.wait().unwrap();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.release();
        let _ = Command::new("umount")
            .args(["-l"])
            .arg(self.path("dev"))
            .status();
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn thin_check(meta: &Path) {
    let o = Command::new("thin_check").arg(meta).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn ext4_on_thin_devices_snapshots_and_discards() {
    let mut s = Served::new();
    fs::File::create(s.path("dev/1"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    assert_eq!(fs::metadata(s.path("dev/1")).unwrap().len(), 2 << 30);
    let lo = s.attach("1");
    sh("mkfs.ext4", &["-q", "-E", "nodiscard", &lo]);
    let m = s.mount(&lo, "m1");
    fs::write(m.join("base"), "in the base device").unwrap();
    s.release();
    let base_used = s.status("Data Used");

    // A snapshot costs no data; writes to it stay its own.
    fs::hard_link(s.path("dev/1"), s.path("dev/2")).unwrap();
    assert_eq!(s.status("Data Used"), base_used);
    let lo = s.attach("2");
    let m = s.mount(&lo, "m2");
    assert_eq!(
        fs::read_to_string(m.join("base")).unwrap(),
        "in the base device"
    );
    fs::write(m.join("big"), vec![7u8; 64 << 20]).unwrap();
    fs::write(m.join("base"), "changed in the snapshot").unwrap();
    sh("sync", &[]);
    let with_big = s.status("Data Used");
    assert!(
        with_big >= base_used + (64 << 20),
        "{with_big} vs {base_used}"
    );
    // Busy: a device in use cannot be deleted.
    let busy = fs::remove_file(s.path("dev/2")).unwrap_err();
    assert_eq!(busy.raw_os_error(), Some(libc::EBUSY));
    // A discard (the file deleted, mounted with discard) gives the blocks back.
    fs::remove_file(m.join("big")).unwrap();
    sh("fstrim", &[m.to_str().unwrap()]);
    sh("sync", &[]);
    let after_trim = s.status("Data Used");
    assert!(
        after_trim < with_big - (32 << 20),
        "{after_trim} vs {with_big}"
    );
    s.release();

    let lo = s.attach("1");
    let m = s.mount(&lo, "m1");
    assert_eq!(
        fs::read_to_string(m.join("base")).unwrap(),
        "in the base device"
    );
    s.release();
    fs::remove_file(s.path("dev/2")).unwrap();
    assert!(!s.path("dev/2").exists());
    s.stop();
    thin_check(&s.path("meta"));
}

#[test]
fn a_killed_server_is_restarted_with_what_was_committed() {
    let mut s = Served::new();
    fs::File::create(s.path("dev/5"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let lo = s.attach("5");
    sh("mkfs.ext4", &["-q", "-E", "nodiscard", &lo]);
    let m = s.mount(&lo, "m");
    fs::write(m.join("kept"), "synced before the kill").unwrap();
    sh("sync", &[]);
    s.server.as_mut().unwrap().kill().unwrap();
    s.server.take().unwrap().wait().unwrap();
    // What was on it is gone with it: the mount and loop device are dead ends now.
    let _ = Command::new("umount").args(["-l"]).arg(&m).status();
    s.mounts.clear();
    s.release();
    // statfs always reaches the server (a stat may be answered from the kernel's cache).
    let dead = rustix::fs::statfs(s.path("dev")).unwrap_err();
    assert_eq!(dead, rustix::io::Errno::NOTCONN);
    sh("umount", &["-l", s.path("dev").to_str().unwrap()]);
    thin_check(&s.path("meta"));
    s.start();
    assert_eq!(fs::metadata(s.path("dev/5")).unwrap().len(), 1 << 30);
    let lo = s.attach("5");
    let o = Command::new("e2fsck").args(["-fy", &lo]).output().unwrap();
    assert!(
        o.status.code().unwrap_or(9) <= 1,
        "e2fsck: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let m = s.mount(&lo, "m");
    assert_eq!(
        fs::read_to_string(m.join("kept")).unwrap(),
        "synced before the kill"
    );
    s.stop();
    thin_check(&s.path("meta"));
}
