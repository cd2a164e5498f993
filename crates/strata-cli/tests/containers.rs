//! Containers on disk, on every storage driver: isolation, copy-on-write through commit,
//! sizes, removal, and crash safety. Needs root.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn base_image(s: &Store) {
    let layer = Layer::new()
        .dir("etc/")
        .file("etc/conf", b"original\n")
        .file("etc/remove-me", b"bye\n")
        .dir("data/")
        .file("data/a", b"a")
        .dir("data/sub/")
        .file("data/sub/b", b"b")
        .dir("olddir/")
        .file("olddir/x", b"x")
        .file("owned", b"chown me")
        .file("big", &vec![7u8; 64 * 1024])
        .hardlink("big-link", "big")
        .symlink("conf-link", "etc/conf")
        .build();
    s.ok(&[
        "import",
        "-c",
        "CMD [\"sh\"]",
        s.file("base.tar", &layer).to_str().unwrap(),
        "base:1",
    ]);
}

fn describe(p: &Path) -> std::collections::BTreeMap<String, String> {
    let out = Command::new("find")
        .arg(p)
        .arg("-printf")
        .arg("%P %y %m %U:%G %s %l\\n")
        .output()
        .unwrap();
    let mut m = std::collections::BTreeMap::new();
    for line in String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(' '))
    {
        let (path, rest) = line.split_once(' ').unwrap();
        let full = p.join(path);
        let content = if full.is_file() && !full.is_symlink() {
            sha256_hex(&std::fs::read(&full).unwrap())
        } else {
            String::new()
        };
        // Non-directories also carry their mtime and xattrs (directory mtimes move with
        // every change made in them).
        let extra = match std::fs::symlink_metadata(&full) {
            Ok(md) if !md.is_dir() => {
                use std::os::unix::fs::MetadataExt;
                let mut attrs: Vec<String> = xattr::list(&full)
                    .map(|l| {
                        l.map(|n| {
                            format!(
                                "{}={:?}",
                                n.to_string_lossy(),
                                xattr::get(&full, &n).ok().flatten()
                            )
                        })
                        .collect()
                    })
                    .unwrap_or_default();
                attrs.sort();
                format!(" mtime={} rdev={} xattrs={attrs:?}", md.mtime(), md.rdev())
            }
            _ => String::new(),
        };
        let content = format!("{content}{extra}");
        let (kind, meta) = rest.split_once(' ').unwrap();
        // Directory sizes vary by filesystem; compare what a layer carries.
        let meta = if kind == "d" {
            meta.rsplit_once(' ')
                .map(|x| x.0)
                .unwrap()
                .rsplit_once(' ')
                .map(|x| x.0)
                .unwrap()
                .to_string()
        } else {
            meta.to_string()
        };
        m.insert(path.to_string(), format!("{kind} {meta} {content}"));
    }
    m
}

/// The same changes, made in a container's mounted root and in a plain directory.
fn change_tree(p: &Path) {
    std::fs::write(p.join("etc/conf"), "modified\n").unwrap(); // copy-up
    std::fs::remove_file(p.join("etc/remove-me")).unwrap(); // whiteout
    std::fs::remove_dir_all(p.join("data")).unwrap(); // replaced directory: opaque
    std::fs::create_dir(p.join("data")).unwrap();
    std::fs::write(p.join("data/new"), "new").unwrap();
    let moved = Command::new("mv")
        .arg(p.join("olddir"))
        .arg(p.join("newdir"))
        .status()
        .unwrap(); // rename a lower dir
    assert!(moved.success());
    std::os::unix::fs::chown(p.join("owned"), Some(1234), Some(5678)).unwrap(); // metadata-only copy-up
    std::fs::set_permissions(p.join("etc"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(p.join("fresh"), "fresh").unwrap();
    std::fs::hard_link(p.join("fresh"), p.join("fresh-link")).unwrap();
    let fifo = Command::new("mkfifo").arg(p.join("pipe")).status().unwrap();
    assert!(fifo.success());
    std::os::unix::fs::symlink("/nowhere", p.join("dangling")).unwrap();
    assert!(Command::new("mknod")
        .arg(p.join("null-dev"))
        .args(["c", "1", "3"])
        .status()
        .unwrap()
        .success());
    xattr::set(p.join("fresh"), "user.note", b"kept").unwrap();
    // A file capability (cap_net_bind_service, effective): what `setcap` writes.
    let cap = [1u8, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    xattr::set(p.join("fresh"), "security.capability", &cap).unwrap();
    // Fixed times on what changed, so both trees agree to the second.
    for changed in [
        "etc/conf", "data/new", "fresh", "pipe", "dangling", "null-dev",
    ] {
        assert!(Command::new("touch")
            .args(["-h", "-m", "-d", "@1600000000"])
            .arg(p.join(changed))
            .status()
            .unwrap()
            .success());
    }
}

fn fifty_containers_are_isolated(driver: &'static str) {
    let s = Store::new(driver);
    base_image(&s);
    let ids: Vec<String> = (0..50)
        .map(|i| {
            s.ok(&["create", "--name", &format!("c{i}"), "base:1"])
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(s.ok(&["ps", "-a", "-q"]).lines().count(), 50);
    for (i, id) in ids.iter().enumerate() {
        let m = s.ok(&["mount", id]);
        let m = Path::new(m.trim());
        std::fs::write(m.join(format!("only-in-{i}")), format!("{i}")).unwrap();
        std::fs::write(m.join("etc/conf"), format!("container {i}\n")).unwrap();
        s.ok(&["umount", id]);
    }
    for (i, id) in ids.iter().enumerate() {
        let m = s.ok(&["mount", id]);
        let m = Path::new(m.trim());
        let own: Vec<String> = std::fs::read_dir(m)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("only-in-"))
            .collect();
        assert_eq!(
            own,
            vec![format!("only-in-{i}")],
            "container {i} sees only its own file"
        );
        assert_eq!(
            std::fs::read_to_string(m.join("etc/conf")).unwrap(),
            format!("container {i}\n")
        );
        s.ok(&["umount", id]);
    }
    let img = s.ok(&["image", "mount", "base:1"]);
    assert_eq!(
        std::fs::read_to_string(Path::new(img.trim()).join("etc/conf")).unwrap(),
        "original\n",
        "the image is unchanged"
    );
    s.ok(&["image", "umount", "base:1"]);
    // Sizes: a fresh container is 0B; one that wrote 10 MB shows about 10 MB.
    let fresh = s.ok(&["create", "base:1"]).trim().to_string();
    let out = s.ok(&[
        "ps",
        "-a",
        "-s",
        "--no-trunc",
        "--filter",
        &format!("id={fresh}"),
        "--format",
        "{{.Size}}",
    ]);
    assert!(out.starts_with("0B (virtual "), "{out}");
    let m = s.ok(&["mount", &fresh]);
    std::fs::write(Path::new(m.trim()).join("ten-mb"), vec![1u8; 10_000_000]).unwrap();
    s.ok(&["umount", &fresh]);
    let out = s.ok(&[
        "ps",
        "-a",
        "-s",
        "--filter",
        &format!("id={fresh}"),
        "--format",
        "{{.Size}}",
    ]);
    if driver == "devicemapper" {
        // The pool counts whole blocks the container alone refers to: the file's, and the
        // filesystem's own metadata and journal blocks it touched.
        let mb: f64 = out.split("MB").next().unwrap().parse().unwrap();
        assert!((10.0..12.0).contains(&mb), "{out}");
    } else {
        assert!(out.starts_with("10MB (virtual 10.1MB)"), "{out}");
    }
    assert!(mounted_under(s.dir.path()).is_empty());
}

fn copy_on_write_through_commit(driver: &'static str) {
    let s = Store::new(driver);
    base_image(&s);
    let reference = s.dir.path().join("reference");
    let img = s.ok(&["image", "mount", "base:1"]);
    assert!(Command::new("cp")
        .arg("-a")
        .arg(img.trim())
        .arg(&reference)
        .status()
        .unwrap()
        .success());
    s.ok(&["image", "umount", "base:1"]);
    let before = describe(&reference);
    change_tree(&reference);
    let want = describe(&reference);

    let id = s
        .ok(&["create", "--name", "work", "base:1"])
        .trim()
        .to_string();
    let m = s.ok(&["mount", "work"]);
    change_tree(Path::new(m.trim()));
    assert_eq!(describe(Path::new(m.trim())), want, "the container's view");
    s.ok(&["umount", "work"]);
    let diff = s.ok(&["diff", "work"]);
    for line in [
        "C /etc",
        "C /etc/conf",
        "D /etc/remove-me",
        "A /fresh",
        "A /pipe",
        "C /owned",
    ] {
        assert!(diff.lines().any(|l| l == line), "{line} in:\n{diff}");
    }
    let new_id = s
        .ok(&["commit", "-m", "changed", "work", "changed:1"])
        .trim()
        .to_string();
    assert!(new_id.starts_with("sha256:"));
    let hist = s.ok(&["history", "--format", "{{.Comment}}", "changed:1"]);
    assert_eq!(hist.lines().next(), Some("changed"));
    let mnt = s.ok(&["image", "mount", "changed:1"]);
    assert_eq!(describe(Path::new(mnt.trim())), want, "the committed image");
    s.ok(&["image", "umount", "changed:1"]);
    let mnt = s.ok(&["image", "mount", "base:1"]);
    assert_eq!(
        describe(Path::new(mnt.trim())),
        before,
        "the base image is unchanged"
    );
    s.ok(&["image", "umount", "base:1"]);
    // Through save and load into another store.
    let archive = s.dir.path().join("changed.tar");
    s.ok(&["save", "-o", archive.to_str().unwrap(), "changed:1"]);
    let t = Store::new(driver);
    t.ok(&["load", "-i", archive.to_str().unwrap()]);
    let mnt = t.ok(&["image", "mount", "changed:1"]);
    assert_eq!(describe(Path::new(mnt.trim())), want, "after save and load");
    t.ok(&["image", "umount", "changed:1"]);
    // Export flattens the container.
    let exported = s.dir.path().join("export.tar");
    s.ok(&["export", "-o", exported.to_str().unwrap(), &id]);
    let flat = s.dir.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&flat)
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&exported)
        .status()
        .unwrap()
        .success());
    assert_eq!(describe(&flat), want, "export");
    s.check_clean();
    t.check_clean();
}

fn removal_and_references(driver: &'static str) {
    let s = Store::new(driver);
    base_image(&s);
    let layers_before: Vec<_> = std::fs::read_dir(s.layer_dir()).unwrap().collect();
    let id = s
        .ok(&["create", "--name", "keep", "-l", "team=a", "base:1"])
        .trim()
        .to_string();
    let err = s.fails(&["rmi", "base:1"]);
    assert!(
        err.contains("container") && err.contains("is using its referenced image"),
        "{err}"
    );
    let err = s.fails(&["create", "--name", "keep", "base:1"]);
    assert!(err.contains("is already in use"), "{err}");
    assert!(s
        .fails(&["create", "--name", "bad/name", "base:1"])
        .contains("Invalid container name"));
    assert!(s.fails(&["rm", "nope"]).contains("No such container: nope"));
    assert_eq!(
        s.ok(&[
            "ps",
            "-a",
            "--filter",
            "label=team=a",
            "--format",
            "{{.Names}}"
        ])
        .trim(),
        "keep"
    );
    assert_eq!(
        s.ok(&[
            "ps",
            "-a",
            "--filter",
            "ancestor=base:1",
            "-q",
            "--no-trunc"
        ])
        .trim(),
        id
    );
    assert_eq!(s.ok(&["ps", "-q"]), "", "nothing runs yet");
    s.ok(&["rename", "keep", "kept"]);
    assert!(s
        .ok(&[
            "inspect",
            "--format",
            "{{.Name}} {{.GraphDriver.Name}}",
            "kept"
        ])
        .starts_with(&format!("/kept {}", s.driver)));
    let m = s.ok(&["mount", "kept"]);
    assert!(Path::new(m.trim()).join("etc/conf").exists());
    s.ok(&["rm", "kept"]);
    assert_eq!(
        std::fs::read_dir(s.layer_dir()).unwrap().count(),
        layers_before.len(),
        "no storage left"
    );
    assert!(!s.root().join("mounts/containers").join(&id).exists());
    assert!(mounted_under(s.dir.path()).is_empty(), "rm unmounts");
    s.ok(&["rmi", "base:1"]);
    s.check_clean();
}

fn killed_commit_and_rm_recover(driver: &'static str) {
    let s = Store::new(driver);
    base_image(&s);
    let id = s
        .ok(&["create", "--name", "busy", "base:1"])
        .trim()
        .to_string();
    let m = s.ok(&["mount", "busy"]);
    for i in 0..40 {
        let data: Vec<u8> = (0..(1 << 20))
            .map(|j: u32| (j.wrapping_mul(2654435761).wrapping_add(i) >> 13) as u8)
            .collect();
        std::fs::write(Path::new(m.trim()).join(format!("f{i}")), data).unwrap();
    }
    s.ok(&["umount", "busy"]);
    for delay_ms in [0u64, 20, 60, 120, 250] {
        let mut child = s
            .cmd(&["commit", "busy", "snap:1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        s.check_clean();
        assert_eq!(
            s.ok(&["ps", "-a", "-q", "--no-trunc"]).trim(),
            id,
            "the container is untouched"
        );
        let _ = s.run(&["rmi", "snap:1"]);
    }
    for delay_ms in [0u64, 5, 15] {
        let mut child = s
            .cmd(&["rm", "busy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        s.check_clean();
        let left = s.ok(&["ps", "-a", "-q"]);
        assert!(
            left.is_empty() || left.lines().count() == 1,
            "fully there or fully gone"
        );
    }
    let _ = s.run(&["rm", "busy"]);
    s.check_clean();
    assert!(s.ok(&["ps", "-a", "-q"]).is_empty());
}

/// A `--rm` container's records are not synced (they die with it), so a power cut may
/// lose its creation, leaving storage and directories no record owns, or its removal,
/// bringing back a container whose run is over. The first open after a reboot (another
/// boot id) removes both, as docker removes `--rm` containers on restart, and drops the
/// last boot's runtime state without signalling the pids recorded in it.
fn a_reboot_ends_the_last_boots_rm_containers(driver: &'static str) {
    let s = Store::new(driver);
    base_image(&s);
    s.ok(&["create", "--name", "kept", "base:1"]);
    let ghost = s
        .ok(&["create", "--rm", "--name", "ghost", "base:1"])
        .trim()
        .to_string();
    let lost = s
        .ok(&["create", "--rm", "--name", "lost", "base:1"])
        .trim()
        .to_string();
    let m = s.ok(&["mount", "lost"]);
    fs::write(Path::new(m.trim()).join("scratch"), "lost with its record").unwrap();
    s.ok(&["umount", "lost"]);
    let run_dir = s.root().join("containers").join(&lost);
    fs::create_dir_all(&run_dir).unwrap();
    fs::write(run_dir.join("config.json"), "{}").unwrap();
    // The power cut lost "lost"'s creation, the last commit: its rows went and its
    // snapshot number is given again.
    let db = rusqlite::Connection::open(s.root().join("strata.db")).unwrap();
    db.execute_batch(&format!(
        "DELETE FROM containers WHERE id = '{lost}';
         DELETE FROM snapshots WHERE key = '{lost}';
         UPDATE sqlite_sequence SET seq = seq - 1 WHERE name = 'snapshots';"
    ))
    .unwrap();
    // In the same boot nothing goes; `system check` names the leftovers.
    assert_eq!(s.ok(&["ps", "-a", "-q"]).lines().count(), 2);
    let out = s.run(&["system", "check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("container directory {}", run_dir.display()))
            && text.contains("belongs to no snapshot"),
        "{text}"
    );
    // Runtime state of the last boot (written now: in this boot a dead shim's state is
    // the runtime's to delete) naming a pid that is another process now.
    let mut bystander = Command::new("sleep").arg("600").spawn().unwrap();
    let state = s.root().join("runtime/native").join(&ghost);
    fs::create_dir_all(&state).unwrap();
    fs::write(
        state.join("state.json"),
        format!(
            "{{\"id\":\"{ghost}\",\"status\":\"running\",\"pid\":{}}}",
            bystander.id()
        ),
    )
    .unwrap();
    // Rebooted: the store was last recovered in another boot.
    assert_eq!(
        db.execute(
            "UPDATE meta SET value = 'an-earlier-boot' WHERE key = 'boot_id'",
            []
        )
        .unwrap(),
        1
    );
    drop(db);
    assert_eq!(s.ok(&["ps", "-a", "--format", "{{.Names}}"]).trim(), "kept");
    s.check_clean();
    assert!(!run_dir.exists() && !state.exists());
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "a pid in stale runtime state was signalled"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    // A new --rm container gets the lost number, and none of its data.
    s.ok(&["create", "--rm", "--name", "fresh", "base:1"]);
    let m = s.ok(&["mount", "fresh"]);
    assert!(!Path::new(m.trim()).join("scratch").exists());
    s.ok(&["umount", "fresh"]);
    s.ok(&["rm", "fresh", "kept"]);
    s.check_clean();
}

fn cp_stays_inside_the_container(driver: &'static str) {
    let s = Store::new(driver);
    let layer = Layer::new()
        .dir("etc/")
        .file("etc/passwd", b"container-passwd\n")
        .symlink("lnk-root", "/")
        .symlink("lnk-etc", "/etc")
        .symlink("lnk-up", "../..")
        .build();
    s.ok(&[
        "import",
        "-c",
        "CMD [\"sh\"]",
        s.file("cp.tar", &layer).to_str().unwrap(),
        "cp:1",
    ]);
    s.ok(&["create", "--name", "c", "cp:1"]);
    let host_file = s.file("note.txt", b"from host\n");
    let host_before = std::fs::read("/etc/passwd").ok();
    // Into the container, through every link: the files land in the container.
    s.ok(&["cp", host_file.to_str().unwrap(), "c:/lnk-etc/"]);
    s.ok(&["cp", host_file.to_str().unwrap(), "c:/lnk-up/up.txt"]);
    s.ok(&["cp", host_file.to_str().unwrap(), "c:/lnk-root/etc/passwd"]);
    assert!(!Path::new("/etc/note.txt").exists() && !Path::new("/up.txt").exists());
    assert_eq!(
        std::fs::read("/etc/passwd").ok(),
        host_before,
        "the host's /etc/passwd is untouched"
    );
    let m = s.ok(&["mount", "c"]);
    let m = Path::new(m.trim());
    assert_eq!(
        std::fs::read_to_string(m.join("etc/note.txt")).unwrap(),
        "from host\n"
    );
    assert_eq!(
        std::fs::read_to_string(m.join("up.txt")).unwrap(),
        "from host\n"
    );
    assert_eq!(
        std::fs::read_to_string(m.join("etc/passwd")).unwrap(),
        "from host\n"
    );
    std::fs::write(m.join("etc/passwd"), "container-passwd\n").unwrap();
    s.ok(&["umount", "c"]);
    // Out of the container, through the links: the container's files, not the host's.
    let out = s.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    s.ok(&["cp", "c:/lnk-etc/passwd", out.join("p1").to_str().unwrap()]);
    s.ok(&[
        "cp",
        "c:/lnk-up/etc/passwd",
        out.join("p2").to_str().unwrap(),
    ]);
    s.ok(&[
        "cp",
        "-L",
        "c:/lnk-etc",
        out.join("etc-copy").to_str().unwrap(),
    ]);
    s.ok(&[
        "cp",
        "c:/lnk-root",
        out.join("link-itself").to_str().unwrap(),
    ]);
    for p in ["p1", "p2", "etc-copy/passwd"] {
        assert_eq!(
            std::fs::read_to_string(out.join(p)).unwrap(),
            "container-passwd\n",
            "{p}"
        );
    }
    assert_eq!(
        std::fs::read_link(out.join("link-itself")).unwrap(),
        Path::new("/"),
        "without -L the link is copied"
    );
    // Tar streams both ways.
    let streamed = s.run(&["cp", "c:/etc", "-"]);
    let names: Vec<String> = tar::Archive::new(&streamed.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"etc/passwd".to_string()), "{names:?}");
    let stream = Layer::new().file("streamed", b"s").build();
    let o = s.run_stdin(&["cp", "-", "c:/lnk-etc"], &stream);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(s.ok(&["diff", "c"]).lines().any(|l| l == "A /etc/streamed"));
    assert!(s
        .fails(&["cp", "c:/nope", out.to_str().unwrap()])
        .contains("Could not find the file"));
    assert!(mounted_under(s.dir.path()).is_empty());
}

macro_rules! per_driver {
    ($($test:ident),*) => {
        mod overlay2 { $(#[test] fn $test() { super::$test("overlay2") })* }
        mod vfs { $(#[test] fn $test() { super::$test("vfs") })* }
        mod btrfs { $(#[test] fn $test() { super::$test("btrfs") })* }
        mod aufs { $(#[test] fn $test() { super::$test("aufs") })* }
        mod devicemapper { $(#[test] fn $test() { super::$test("devicemapper") })* }
        mod btrfs_native { $(#[test] fn $test() { super::$test("btrfs-native") })* }
    };
}

per_driver!(
    fifty_containers_are_isolated,
    copy_on_write_through_commit,
    removal_and_references,
    killed_commit_and_rm_recover,
    a_reboot_ends_the_last_boots_rm_containers,
    cp_stays_inside_the_container
);

#[test]
fn auto_remove_containers_are_volatile_on_overlay2() {
    let s = Store::new("overlay2");
    base_image(&s);
    s.ok(&["create", "--rm", "--name", "v", "base:1"]);
    s.ok(&["create", "--name", "d", "base:1"]);
    let opts = |name: &str| {
        let m = s.ok(&["mount", name]);
        let o = Command::new("findmnt")
            .args(["-no", "OPTIONS"])
            .arg(m.trim())
            .output()
            .unwrap();
        s.ok(&["umount", name]);
        String::from_utf8(o.stdout).unwrap()
    };
    assert!(opts("v").contains("volatile"), "--rm: volatile");
    assert!(!opts("d").contains("volatile"), "otherwise durable");
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.HostConfig.AutoRemove}}", "v"])
            .trim(),
        "true"
    );
}

/// CVE-2018-15664's class: a directory in the container swapped for a symlink to a host
/// directory while `cp` runs. Resolution inside the container root means neither direction
/// ever reaches the host directory.
#[test]
fn cp_races_with_symlink_swaps_stay_inside() {
    let s = Store::new("overlay2");
    base_image(&s);
    s.ok(&["create", "--name", "racy", "base:1"]);
    let host_dir = s.dir.path().join("host-secret");
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::write(host_dir.join("secret"), "HOST SECRET").unwrap();
    let m = s.ok(&["mount", "racy"]);
    let root = std::path::PathBuf::from(m.trim());
    std::fs::create_dir(root.join("target")).unwrap();
    std::fs::write(root.join("target/secret"), "container file").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (root, host_dir, stop) = (root.clone(), host_dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Swap the directory for a symlink to the host directory, and back.
                let _ = std::fs::rename(root.join("target"), root.join("target-real"));
                let _ = std::os::unix::fs::symlink(&host_dir, root.join("target"));
                let _ = std::fs::remove_file(root.join("target"));
                let _ = std::fs::rename(root.join("target-real"), root.join("target"));
                swaps += 1;
            }
            swaps
        })
    };
    let note = s.file("note", b"written by cp");
    let out_dir = s.dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    for i in 0..100 {
        let _ = s.run(&[
            "cp",
            note.to_str().unwrap(),
            &format!("racy:/target/pwned{i}"),
        ]);
        let dest = out_dir.join(format!("got{i}"));
        let _ = s.run(&["cp", "racy:/target/secret", dest.to_str().unwrap()]);
        if let Ok(got) = std::fs::read_to_string(&dest) {
            assert_ne!(got, "HOST SECRET", "copy {i} read the host's file");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "the race ran ({swaps} swaps)");
    let names: Vec<String> = std::fs::read_dir(&host_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["secret".to_string()],
        "nothing was written into the host directory"
    );
    s.ok(&["umount", "racy"]);
}

/// The aufs driver: a container's union server killed behind strata's back leaves a dead
/// FUSE mount; the next mount replaces it, and nothing written before is lost.
#[test]
fn aufs_server_killed_is_recovered() {
    let s = Store::new("aufs");
    base_image(&s);
    let info = s.ok(&["info"]);
    assert!(info.contains("Storage Driver: aufs"), "{info}");
    assert!(
        info.contains(" Union Filesystem: strata-aufs (FUSE)"),
        "{info}"
    );
    s.ok(&["create", "--name", "c", "base:1"]);
    let m = PathBuf::from(s.ok(&["mount", "c"]).trim());
    fs::write(m.join("kept"), "written before").unwrap();
    fs::write(m.join("etc/conf"), "changed\n").unwrap();
    let killed = Command::new("pkill")
        .args(["-KILL", "-f"])
        .arg(format!("^[^ ]*strata-aufs .*{}$", m.display()))
        .status()
        .unwrap();
    assert!(killed.success(), "the container's union server was found");
    // Asked with statfs, which always reaches the server. Over io_uring the kernel tears a
    // dead server's rings down after it exits: requests caught on the way fail with
    // ECANCELED or ECONNABORTED, and every one after with ENOTCONN.
    let statfs_errno = || {
        let path = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a statfs buffer of the right size.
        let rc = unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            libc::statfs(path.as_ptr(), &mut st)
        };
        (rc != 0).then(|| std::io::Error::last_os_error().raw_os_error())
    };
    let mut dead = statfs_errno();
    for _ in 0..100 {
        if dead == Some(Some(libc::ENOTCONN)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        dead = statfs_errno();
    }
    assert_eq!(dead, Some(Some(libc::ENOTCONN)), "a dead mount");
    let again = PathBuf::from(s.ok(&["mount", "c"]).trim());
    assert_eq!(again, m);
    assert_eq!(
        fs::read_to_string(m.join("kept")).unwrap(),
        "written before"
    );
    assert_eq!(fs::read_to_string(m.join("etc/conf")).unwrap(), "changed\n");
    s.ok(&["umount", "c"]);
    assert!(s.ok(&["diff", "c"]).lines().any(|l| l == "A /kept"));
    assert!(mounted_under(s.dir.path()).is_empty());
    s.check_clean();
}

/// The devicemapper driver: `info` shows the pool as docker did, a container's writes take
/// pool space, and removing the container gives it back.
#[test]
fn devicemapper_pool_space_comes_back() {
    let s = Store::new("devicemapper");
    base_image(&s);
    let info = s.ok(&["info"]);
    for line in [
        "Storage Driver: devicemapper",
        " Pool Blocksize: 65.54 kB",
        " Base Device Size: 10.7374 GB",
        " Backing Filesystem: ext4",
        " Data Space Used:",
        " Metadata Space Total: 2.1475 GB",
        " Thin Pool Minimum Free Space:",
        " Deferred Deletion Enabled: false",
        " Deferred Deleted Device Count: 0",
    ] {
        assert!(info.contains(line), "{line:?} in\n{info}");
    }
    let warn = s.run(&["info"]);
    assert!(String::from_utf8_lossy(&warn.stderr)
        .contains("Usage of loopback devices is strongly discouraged for production use"));
    let used = |s: &Store| -> f64 {
        let info = s.ok(&["info"]);
        let line = info
            .lines()
            .find(|l| l.contains("Data Space Used:"))
            .unwrap()
            .to_string();
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    let before = used(&s);
    s.ok(&["create", "--name", "c", "base:1"]);
    let m = PathBuf::from(s.ok(&["mount", "c"]).trim());
    fs::write(m.join("blob"), vec![9u8; 30 << 20]).unwrap();
    s.ok(&["umount", "c"]);
    let with = used(&s);
    assert!(with > before + 0.03, "{before} GB -> {with} GB");
    s.ok(&["rm", "c"]);
    let after = used(&s);
    assert!(
        after < before + 0.005,
        "{before} GB -> {with} GB -> {after} GB"
    );
    assert!(mounted_under(s.dir.path()).is_empty());
    s.check_clean();
}

/// devicemapper `--storage-opt size=`: a container's device (and its filesystem) made
/// larger than the base device; smaller is refused.
#[test]
fn devicemapper_size_grows_a_container_device() {
    let s = Store::new("devicemapper");
    s.busybox();
    let big = 12u64 << 30;
    s.ok(&[
        "create",
        "--storage-opt",
        &format!("size={big}"),
        "--name",
        "big",
        "busybox",
        "true",
    ]);
    let m = PathBuf::from(s.ok(&["mount", "big"]).trim());
    let st = rustix::fs::statvfs(&m).unwrap();
    let total = st.f_blocks * st.f_frsize;
    assert!(
        total > 11 << 30,
        "{total} bytes: the filesystem grew past the 10 GiB base"
    );
    s.ok(&["umount", "big"]);
    let err = s.fails(&["create", "--storage-opt", "size=1G", "busybox", "true"]);
    assert!(err.contains("smaller than the base device"), "{err}");
    assert_eq!(
        s.ok(&["ps", "-aq"]).lines().count(),
        1,
        "the refused container is gone"
    );
    s.check_clean();
}

/// devicemapper options: a small pool that autoextends grows its data file as a container
/// fills it; bad options are refused before anything is made.
#[test]
fn devicemapper_pool_autoextends() {
    let s = Store::new("devicemapper");
    let err = s.fails(&["--storage-opt", "dm.fs=btrfs", "info"]);
    assert!(err.contains("invalid dm.fs \"btrfs\""), "{err}");
    let err = s.fails(&["--storage-opt", "dm.colour=red", "info"]);
    assert!(
        err.contains("unknown storage option \"dm.colour\""),
        "{err}"
    );
    assert!(!s.root().join("devicemapper/devicemapper/metadata").exists());
    let opts = [
        "--storage-opt",
        "dm.loopdatasize=256M",
        "--storage-opt",
        "dm.basesize=1G",
        "--storage-opt",
        "dm.thin_pool_autoextend_threshold=50",
        "--storage-opt",
        "dm.thin_pool_autoextend_percent=100",
    ];
    let with = |args: &[&str]| -> String {
        let mut all: Vec<&str> = opts.to_vec();
        all.extend_from_slice(args);
        s.ok(&all)
    };
    let total = |info: &str| -> f64 {
        let l = info
            .lines()
            .find(|l| l.contains("Data Space Total:"))
            .unwrap();
        l.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    // The first use makes the pool (and starts its server) with the options.
    let before = total(&with(&["info"]));
    base_image(&s);
    assert!(before < 0.3, "{before} GB");
    with(&["create", "--name", "c", "base:1"]);
    let m = PathBuf::from(with(&["mount", "c"]).trim());
    fs::write(m.join("fill"), vec![3u8; 300 << 20]).unwrap();
    with(&["umount", "c"]);
    let after = total(&with(&["info"]));
    assert!(after > 0.5, "the pool grew: {before} GB -> {after} GB");
    with(&["rm", "c"]);
}

/// devicemapper on block devices (docker's direct-lvm mode, dm.datadev and dm.metadatadev):
/// loop devices of the test stand in for disks. A metadata device holding something else
/// is refused untouched.
#[test]
fn devicemapper_on_block_devices() {
    let s = Store::new("devicemapper");
    let disk = |name: &str, size: u64| -> String {
        let f = s.dir.path().join(name);
        std::fs::File::create(&f).unwrap().set_len(size).unwrap();
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let data = disk("data.img", 4 << 30);
    let meta = disk("meta.img", 64 << 20);
    let junk = disk("junk.img", 64 << 20);
    std::fs::write(&junk, b"not a pool").unwrap();
    struct Detach(Vec<String>);
    impl Drop for Detach {
        fn drop(&mut self) {
            for d in &self.0 {
                let _ = Command::new("losetup").args(["-d", d]).status();
            }
        }
    }
    let _detach = Detach(vec![data.clone(), meta.clone(), junk.clone()]);
    let err = s.fails(&[
        "--storage-opt",
        &format!("dm.datadev={data}"),
        "--storage-opt",
        &format!("dm.metadatadev={junk}"),
        "info",
    ]);
    assert!(err.contains("holds data that is not a thin pool"), "{err}");
    let err = s.fails(&["--storage-opt", &format!("dm.datadev={data}"), "info"]);
    assert!(err.contains("go together"), "{err}");
    let opts = [
        "--storage-opt".to_string(),
        format!("dm.datadev={data}"),
        "--storage-opt".to_string(),
        format!("dm.metadatadev={meta}"),
        "--storage-opt".to_string(),
        "dm.basesize=1G".to_string(),
    ];
    let with = |args: &[&str]| {
        let mut all: Vec<&str> = opts.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        s.run(&all)
    };
    let info = with(&["info"]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(text.contains(&format!(" Data file: {data}")), "{text}");
    assert!(text.contains(&format!(" Metadata file: {meta}")), "{text}");
    assert!(text.contains(" Data Space Total: 4.2950 GB"), "{text}");
    assert!(!text.contains("loop file"), "{text}");
    assert!(!String::from_utf8_lossy(&info.stderr).contains("loopback"));
    base_image(&s);
    s.ok(&["create", "--name", "c", "base:1"]);
    let m = PathBuf::from(s.ok(&["mount", "c"]).trim());
    assert_eq!(
        fs::read_to_string(m.join("etc/conf")).unwrap(),
        "original\n"
    );
    s.ok(&["umount", "c"]);
    s.ok(&["rm", "c"]);
    s.check_clean();
    s.ok(&["system", "reset", "-f"]);
}

/// devicemapper deferred removal and deletion: a container whose filesystem is busy (a
/// process works in it) is unmounted by detaching and removed by deferring its device's
/// deletion, which the next store open finishes once the last user has gone. Without the
/// options the unmount fails and says why.
#[test]
fn devicemapper_defers_removal_and_deletion_of_busy_devices() {
    let s = Store::new("devicemapper");
    base_image(&s);
    let deferred = [
        "--storage-opt",
        "dm.use_deferred_removal=true",
        "--storage-opt",
        "dm.use_deferred_deletion=true",
    ];
    let with = |args: &[&str]| -> String {
        let mut all = deferred.to_vec();
        all.extend_from_slice(args);
        s.ok(&all)
    };
    let field = |info: &str, key: &str| -> String {
        let line = info.lines().find(|l| l.contains(key)).unwrap_or_default();
        line.split(": ").nth(1).unwrap_or_default().to_string()
    };
    s.ok(&["create", "--name", "c", "base:1"]);
    let m = PathBuf::from(s.ok(&["mount", "c"]).trim());
    // Killed however the test ends: it holds the filesystem.
    struct User(std::process::Child);
    impl Drop for User {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let user = User(
        Command::new("sleep")
            .arg("600")
            .current_dir(&m)
            .spawn()
            .unwrap(),
    );
    let err = s.fails(&["umount", "c"]);
    assert!(err.contains("busy"), "{err}");

    let info = with(&["info"]);
    assert_eq!(field(&info, "Deferred Removal Enabled"), "true");
    assert_eq!(field(&info, "Deferred Deletion Enabled"), "true");
    with(&["umount", "c"]);
    assert!(mounted_under(s.dir.path()).is_empty(), "detached");
    with(&["rm", "c"]);
    assert_eq!(
        field(&with(&["info"]), "Deferred Deleted Device Count"),
        "1"
    );
    assert!(s.ok(&["ps", "-aq"]).trim().is_empty());

    // The last user goes: the detached filesystem, its loop device, then the device.
    drop(user);
    let mut left = String::new();
    for _ in 0..100 {
        left = field(&with(&["info"]), "Deferred Deleted Device Count");
        if left == "0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(left, "0", "the deferred deletion was finished");
    s.check_clean();
}
