//! The store as a whole: crash safety, concurrent processes, the driver recorded at first
//! use, docker's exit codes. Needs root.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;

/// Layers of incompressible data, so applying them takes a while to interrupt.
fn big_archive(layers: usize, per_layer: usize) -> Vec<u8> {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let ls: Vec<Vec<u8>> = (0..layers)
        .map(|i| {
            Layer::new()
                .dir("d/")
                .file(&format!("d/f{i}"), &noise(per_layer))
                .build()
        })
        .collect();
    let mut a = Archive::new();
    a.image(&["big:1"], &ls);
    a.build()
}

fn killed_mid_load_recovers(driver: &'static str) {
    let s = Store::new(driver);
    let archive = s.file("big.tar", &big_archive(24, 2 << 20));
    // Kill at increasing delays: while blobs stream in, while layers apply, near the end.
    for delay_ms in [0u64, 15, 40, 80, 150, 250, 400, 700] {
        let mut child = s
            .cmd(&["load", "-i", archive.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // The next process recovers; the store it leaves is consistent.
        let out = s.run(&["system", "check"]);
        assert!(
            out.status.success(),
            "after a kill at {delay_ms} ms: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let images = s.ok(&["images", "-q"]);
        assert!(
            images.is_empty() || images.lines().count() == 1,
            "the image is fully there or fully absent: {images}"
        );
    }
    s.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(s.ok(&["history", "-q", "big:1"]).lines().count(), 24);
    s.check_clean();
    assert!(mounted_under(s.dir.path()).is_empty());
}

fn concurrent_loads_share_layers(driver: &'static str) {
    let s = Store::new(driver);
    let archive = s.file("big.tar", &big_archive(6, 1 << 20));
    let children: Vec<_> = (0..3)
        .map(|_| {
            s.cmd(&["load", "-i", archive.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(s.ok(&["info", "--format", "{{.Layers}}"]).trim(), "6");
    s.check_clean();
}

fn concurrent_mixed_work(driver: &'static str) {
    let s = Store::new(driver);
    let mut a = Archive::new();
    a.image(&["base:1"], &[Layer::new().file("f", b"x").build()]);
    s.ok(&[
        "load",
        "-i",
        s.file("base.tar", &a.build()).to_str().unwrap(),
    ]);
    let archive = s.file("big.tar", &big_archive(4, 1 << 20));
    let mut children = Vec::new();
    for w in 0..4 {
        let script = format!(
            "for i in $(seq 10); do \"$0\" create --name w{w}-$i base:1 >/dev/null || exit 1; done; \"$0\" system df >/dev/null"
        );
        children.push(
            s.cmd(&[])
                .arg("unused")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn_shell(&script),
        );
    }
    children.push(
        s.cmd(&["load", "-i", archive.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(s.ok(&["ps", "-a", "-q"]).lines().count(), 40);
    s.check_clean();
}

trait SpawnShell {
    fn spawn_shell(&mut self, script: &str) -> std::process::Child;
}

impl SpawnShell for std::process::Command {
    /// Runs `script` under sh with $0 set to the strata binary and this command's environment.
    fn spawn_shell(&mut self, script: &str) -> std::process::Child {
        let bin = self.get_program().to_owned();
        let mut sh = std::process::Command::new("sh");
        sh.arg("-c").arg(script).arg(bin);
        for (k, v) in self.get_envs() {
            if let Some(v) = v {
                sh.env(k, v);
            }
        }
        sh.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn cli_contract(driver: &'static str) {
    let s = Store::new(driver);
    // Unknown flags are usage errors: 125, as docker.
    let out = s.run(&["images", "--bogus"]);
    assert_eq!(out.status.code(), Some(125));
    let out = s.run(&["image", "inspect", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image: nope"));
    let out = s.run(&["inspect", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such object: nope"));
    assert!(s
        .fails(&["load", "-i", "/nonexistent.tar"])
        .contains("/nonexistent.tar"));
    assert!(s
        .fails(&["images", "--filter", "color=red"])
        .contains("invalid filter"));
    // The driver is recorded; a store with data refuses another one.
    s.ok(&[
        "import",
        s.file("l.tar", &Layer::new().file("f", b"x").build())
            .to_str()
            .unwrap(),
        "x:1",
    ]);
    let other = if driver == "vfs" { "overlay2" } else { "vfs" };
    let mut c = s.cmd(&["images"]);
    c.env("STRATA_STORAGE_DRIVER", other);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("uses storage driver {driver}")));
    let mut c = s.cmd(&["info", "--format", "{{.Driver}}"]);
    c.env_remove("STRATA_STORAGE_DRIVER");
    assert_eq!(
        String::from_utf8(c.output().unwrap().stdout)
            .unwrap()
            .trim(),
        driver,
        "the recorded driver is used by default"
    );
    // Output formats.
    let json = s.ok(&["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["Repository"], "x");
    assert_eq!(
        s.ok(&["images", "--format", "table {{.Repository}}\t{{.Tag}}"]),
        "REPOSITORY   TAG\nx            1\n"
    );
    let info = s.ok(&["info"]);
    assert!(
        info.contains(&format!(" Storage Driver: {driver}\n"))
            && info.contains("  Backing Filesystem: "),
        "{info}"
    );
}

fn newer_store_is_refused(driver: &'static str) {
    let s = Store::new(driver);
    s.ok(&["images"]);
    assert!(
        stamp_future_format(&s.root().join("strata.db")),
        "format stamp updated"
    );
    let err = s.fails(&["images"]);
    assert!(err.contains("newer than this strata understands"), "{err}");
}

/// Stamps the store as written by a future strata.
fn stamp_future_format(db: &std::path::Path) -> bool {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute(
        "UPDATE meta SET value = '999' WHERE key = 'format_version'",
        [],
    )
    .unwrap()
        == 1
}

fn check_finds_damage_and_repairs_leftovers(driver: &'static str) {
    let s = Store::new(driver);
    let mut a = Archive::new();
    a.image(
        &["app:1"],
        &[
            Layer::new().file("a", b"a").build(),
            Layer::new().file("b", b"b").build(),
        ],
    );
    s.ok(&["load", "-i", s.file("a.tar", &a.build()).to_str().unwrap()]);
    s.check_clean();
    // Leftovers: storage no snapshot owns, a blob nothing uses, an abandoned ingest.
    match driver {
        // A thin device no snapshot owns (snapshot N is device N + 1).
        "devicemapper" => drop(std::fs::File::create(s.layer_dir().join("100000")).unwrap()),
        _ => std::fs::create_dir_all(s.layer_dir().join("99999/diff")).unwrap(),
    }
    std::fs::write(
        s.root()
            .join("content/blobs/sha256")
            .join(sha256_hex(b"junk")),
        b"junk",
    )
    .unwrap();
    std::fs::write(s.root().join("content/ingest/deadbeef"), b"partial").unwrap();
    let out = s.run(&["system", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("storage #99999")
            && text.contains("is not used by any image")
            && text.contains("unfinished ingest"),
        "{text}"
    );
    let out = s.ok(&["system", "check", "--repair"]);
    assert!(out.contains("repaired: storage #99999"), "{out}");
    s.check_clean();
    assert_eq!(
        s.ok(&["images", "-q"]).lines().count(),
        1,
        "repair removes no image"
    );
    // Damage: a layer blob whose bytes changed is reported, and not "repaired" away.
    let blobs = s.root().join("content/blobs/sha256");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 1000)
        .unwrap();
    let mut perms = std::fs::metadata(&victim).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&victim, perms).unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let out = s.run(&["system", "check", "--repair"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ERROR: blob sha256:") && text.contains("does not match its digest"),
        "{text}"
    );
}

macro_rules! per_driver {
    ($($test:ident),*) => {
        mod overlay2 { $(#[test] fn $test() { super::$test("overlay2") })* }
        mod vfs { $(#[test] fn $test() { super::$test("vfs") })* }
        mod btrfs { $(#[test] fn $test() { super::$test("btrfs") })* }
        mod aufs { $(#[test] fn $test() { super::$test("aufs") })* }
        mod devicemapper { $(#[test] fn $test() { super::$test("devicemapper") })* }
    };
}

per_driver!(
    killed_mid_load_recovers,
    concurrent_loads_share_layers,
    cli_contract,
    newer_store_is_refused,
    check_finds_damage_and_repairs_leftovers,
    concurrent_mixed_work
);
