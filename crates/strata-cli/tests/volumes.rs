//! Volumes: data that bypasses the storage driver and outlives containers. Needs root.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

fn store() -> Store {
    let s = Store::new("overlay2");
    s.busybox();
    s
}

#[test]
fn named_volumes_outlive_their_containers() {
    let s = store();
    s.ok(&[
        "run",
        "--name",
        "w",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "data:/data",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "kept\n"
    );
    // The engine mounts volumes before the runtime starts: runc carries them too.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "--runtime",
            "runc",
            "-v",
            "data:/data",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "kept\n"
    );
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["volume", "inspect", "data"])).unwrap();
    let v = &v[0];
    assert_eq!(v["Name"], "data");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    let mountpoint = PathBuf::from(v["Mountpoint"].as_str().unwrap());
    assert_eq!(mountpoint, s.root().join("volumes/data/_data"));
    assert!(v["CreatedAt"].as_str().unwrap().ends_with('Z'));
    // cp reaches a stopped container's volume: in and out, and never its writable layer.
    let note = s.file("note", b"copied in\n");
    s.ok(&["cp", note.to_str().unwrap(), "w:/data/note"]);
    assert_eq!(
        std::fs::read(mountpoint.join("note")).unwrap(),
        b"copied in\n"
    );
    let back = s.dir.path().join("back");
    s.ok(&["cp", "w:/data/f", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), b"kept\n");
    assert!(!s.ok(&["diff", "w"]).contains("/data/note"));
    assert!(mounted_under(s.dir.path()).is_empty());
    // In use by a stopped container: refused, data kept.
    let err = s.fails(&["volume", "rm", "data"]);
    assert!(err.contains("volume is in use"), "{err}");
    assert_eq!(std::fs::read(mountpoint.join("f")).unwrap(), b"kept\n");
    // Removing the container, even with -v, leaves a named volume alone.
    s.ok(&["rm", "-v", "w"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "data\n");
    s.ok(&["volume", "rm", "data"]);
    assert!(!s.root().join("volumes/data").exists());
    // A directory no volume owns (a removal killed half way) is found and repaired.
    std::fs::create_dir_all(s.root().join("volumes/stray/_data")).unwrap();
    let out = s.run(&["system", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("volume directory stray belongs to no volume"));
    s.ok(&["system", "check", "--repair"]);
    assert!(!s.root().join("volumes/stray").exists());
    s.check_clean();
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    assert!(mounted_under(s.dir.path()).is_empty());
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_prune() {
    let s = store();
    let layer = Layer::new()
        .dir("vol/")
        .file("vol/seed", b"from the image")
        .build();
    s.ok(&[
        "import",
        "-c",
        "VOLUME [\"/vol\"]",
        s.file("v.tar", &layer).to_str().unwrap(),
        "withvol:1",
    ]);
    s.ok(&["volume", "create", "--label", "keep=yes", "named"]);
    s.ok(&[
        "create",
        "--name",
        "a",
        "-v",
        "/scratch",
        "-v",
        "named:/named",
        "withvol:1",
        "true",
    ]);
    // Two anonymous volumes (-v /scratch, the image's VOLUME) and the named one.
    assert_eq!(s.ok(&["volume", "ls", "-q"]).lines().count(), 3);
    assert_eq!(
        s.ok(&["volume", "ls", "-q", "--filter", "label=keep=yes"]),
        "named\n"
    );
    assert_eq!(
        s.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]),
        ""
    );
    s.ok(&["rm", "a"]);
    assert_eq!(
        s.ok(&["volume", "ls", "-q", "--filter", "dangling=true"])
            .lines()
            .count(),
        3
    );
    // prune takes the anonymous ones only; -a the rest.
    let out = s.ok(&["volume", "prune", "-f"]);
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "named\n");
    s.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    // rm -v and --rm remove a container's anonymous volumes, never named ones.
    s.ok(&[
        "create",
        "--name",
        "b",
        "-v",
        "/scratch",
        "-v",
        "named:/named",
        "busybox",
        "true",
    ]);
    s.ok(&["rm", "-v", "b"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "named\n");
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "/scratch",
        "-v",
        "named:/named",
        "busybox",
        "true",
    ]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "named\n");
}

#[test]
fn an_empty_volume_is_filled_from_the_image_keeping_owners_and_modes() {
    let s = store();
    // busybox plus /data (0750) holding a file owned by 1000:2000 (0640) and a 0700 dir.
    s.ok(&["create", "--name", "owner", "busybox", "true"]);
    let m = PathBuf::from(s.ok(&["mount", "owner"]).trim());
    std::fs::create_dir_all(m.join("data/sub")).unwrap();
    std::fs::write(m.join("data/secret"), b"s3cret").unwrap();
    std::os::unix::fs::chown(m.join("data/secret"), Some(1000), Some(2000)).unwrap();
    for (p, mode) in [("data", 0o750), ("data/secret", 0o640), ("data/sub", 0o700)] {
        std::fs::set_permissions(m.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    s.ok(&["umount", "owner"]);
    s.ok(&["commit", "owner", "data:2"]);
    s.ok(&["run", "--rm", "-v", "pop:/data", "data:2", "true"]);
    let data = s.root().join("volumes/pop/_data");
    let secret = std::fs::metadata(data.join("secret")).unwrap();
    assert_eq!((secret.uid(), secret.gid()), (1000, 2000));
    assert_eq!(secret.permissions().mode() & 0o7777, 0o640);
    assert_eq!(std::fs::read(data.join("secret")).unwrap(), b"s3cret");
    let sub = std::fs::metadata(data.join("sub")).unwrap();
    assert_eq!(sub.permissions().mode() & 0o7777, 0o700);
    // Not again once the volume has content, and never with nocopy.
    std::fs::write(data.join("secret"), b"changed").unwrap();
    s.ok(&["run", "--rm", "-v", "pop:/data", "data:2", "true"]);
    assert_eq!(std::fs::read(data.join("secret")).unwrap(), b"changed");
    s.ok(&["run", "--rm", "-v", "empty:/data:nocopy", "data:2", "true"]);
    assert_eq!(
        std::fs::read_dir(s.root().join("volumes/empty/_data"))
            .unwrap()
            .count(),
        0
    );
    // A bind mount obscures the image's content and copies nothing.
    let host = s.dir.path().join("host-data");
    let out = s.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data", host.display()),
        "data:2",
        "ls",
        "-A",
        "/data",
    ]);
    assert_eq!(
        out, "",
        "missing host dir created empty, image content hidden"
    );
    assert!(host.is_dir());
}

#[test]
fn binds_and_read_only_mounts() {
    let s = store();
    let host = s.dir.path().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), b"from host").unwrap();
    let bind = format!("{}:/mnt", host.display());
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            "cat /mnt/in; echo out > /mnt/out"
        ]),
        "from host"
    );
    assert_eq!(std::fs::read(host.join("out")).unwrap(), b"out\n");
    let out = s.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{bind}:ro"),
        "busybox",
        "sh",
        "-c",
        "echo x > /mnt/x",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
    assert!(!host.join("x").exists());
    // --mount: the same with readonly; a missing source is an error, as docker's.
    let spec = format!("type=bind,source={},target=/mnt,readonly", host.display());
    assert_eq!(
        s.ok(&["run", "--rm", "--mount", &spec, "busybox", "cat", "/mnt/in"]),
        "from host"
    );
    let missing = format!("type=bind,source={}/nope,target=/mnt", host.display());
    let err = s.fails(&["create", "--mount", &missing, "busybox", "true"]);
    assert!(err.contains("bind source path does not exist"), "{err}");
    // --mount type=volume with readonly, and type=tmpfs.
    s.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=vm,target=/v",
        "busybox",
        "sh",
        "-c",
        "echo v > /v/f",
    ]);
    let out = s.run(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=vm,dst=/v,readonly",
        "busybox",
        "sh",
        "-c",
        "cat /v/f; echo y > /v/g",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n");
    assert_ne!(out.status.code(), Some(0));
    let out = s.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,target=/t,tmpfs-size=1m",
        "busybox",
        "sh",
        "-c",
        "grep ' /t ' /proc/mounts",
    ]);
    assert!(out.starts_with("tmpfs /t tmpfs"), "{out}");
    assert!(mounted_under(s.dir.path()).is_empty());
}

#[test]
fn volumes_from_shares_both_ways() {
    let s = store();
    s.ok(&[
        "create",
        "--name",
        "owner",
        "-v",
        "shared:/s",
        "-v",
        "/anon",
        "busybox",
        "true",
    ]);
    s.ok(&[
        "run",
        "--rm",
        "--volumes-from",
        "owner",
        "busybox",
        "sh",
        "-c",
        "echo 1 > /s/one; echo 2 > /anon/two",
    ]);
    s.ok(&["start", "-a", "owner"]);
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "--volumes-from",
            "owner",
            "busybox",
            "cat",
            "/s/one",
            "/anon/two"
        ]),
        "1\n2\n"
    );
    let out = s.run(&[
        "run",
        "--rm",
        "--volumes-from",
        "owner:ro",
        "busybox",
        "sh",
        "-c",
        "echo 3 > /s/three",
    ]);
    assert_ne!(out.status.code(), Some(0));
    // The anonymous volume belongs to its owner: a --rm container that borrowed it does
    // not remove it.
    assert_eq!(s.ok(&["volume", "ls", "-q"]).lines().count(), 2);
}

#[test]
fn volume_writes_bypass_the_writable_layer() {
    let s = store();
    s.ok(&[
        "run",
        "--name",
        "w",
        "-v",
        "big:/v",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/v/ten",
        "bs=1M",
        "count=10",
    ]);
    let size = s.ok(&["ps", "-a", "-s", "--format", "{{.Size}}"]);
    assert!(
        !size.split(' ').next().unwrap().contains("MB"),
        "the 10 MB are not in the writable layer: {size}"
    );
    let diff = s.ok(&["diff", "w"]);
    assert!(!diff.contains("/v/ten"), "{diff}");
    s.ok(&["commit", "w", "committed:1"]);
    assert_eq!(
        s.ok(&["run", "--rm", "committed:1", "ls", "-A", "/v"]),
        "",
        "the commit holds the mount point, not the data"
    );
    let tar = s.dir.path().join("w.tar");
    s.ok(&["export", "-o", tar.to_str().unwrap(), "w"]);
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listing.stdout).contains("v/ten"));
    assert_eq!(
        std::fs::metadata(s.root().join("volumes/big/_data/ten"))
            .unwrap()
            .len(),
        10 << 20
    );
    // system df counts the volume, its container and its size.
    let df = s.ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Active}} {{.Size}}",
    ]);
    assert!(df.contains("Local Volumes 1 1 10.5MB"), "{df}");
    let dfv = s.ok(&["system", "df", "-v"]);
    let row = dfv
        .lines()
        .find(|l| l.starts_with("big "))
        .unwrap_or_else(|| panic!("{dfv}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["big", "1", "10.5MB"]
    );
}

#[test]
fn bad_names_and_destinations_are_refused() {
    let s = store();
    for name in ["../../etc", "a/b", "x", ".hidden", "_under"] {
        let err = s.fails(&["volume", "create", name]);
        assert!(err.contains("invalid volume name"), "{name}: {err}");
    }
    for spec in ["../../etc:/data", "a/b:/data"] {
        let err = s.fails(&["create", "-v", spec, "busybox", "true"]);
        assert!(err.contains("invalid"), "{spec}: {err}");
    }
    for spec in ["vol:/proc", "vol:/sys/kernel", "vol:relative", "vol:/"] {
        let err = s.fails(&["create", "-v", spec, "busybox", "true"]);
        assert!(err.contains("invalid mount destination"), "{spec}: {err}");
    }
    let err = s.fails(&[
        "create",
        "--mount",
        "type=volume,src=vol,dst=/proc/x",
        "busybox",
        "true",
    ]);
    assert!(
        err.contains("/proc and /sys cannot be mounted over"),
        "{err}"
    );
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    assert!(!s.root().join("etc").exists());
}

/// CVE-2021-30465's class: a mount target that is a symlink in the image resolves inside
/// the container's root, so the volume never lands on the host path it names.
#[test]
fn symlinked_mount_targets_stay_inside_the_container() {
    let s = store();
    let host = s.dir.path().join("host-secret");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("keep"), b"host file").unwrap();
    // busybox plus two links: one to the host directory by its absolute path, one
    // climbing far above the root.
    s.ok(&["create", "--name", "base", "busybox", "true"]);
    let m = PathBuf::from(s.ok(&["mount", "base"]).trim());
    std::os::unix::fs::symlink(&host, m.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../..", m.join("up")).unwrap();
    s.ok(&["umount", "base"]);
    s.ok(&["commit", "base", "links:1"]);
    for target in ["/escape", "/up/tmp/escaped"] {
        s.ok(&[
            "run",
            "--rm",
            "-v",
            &format!("vol:{target}"),
            "links:1",
            "true",
        ]);
        assert_eq!(std::fs::read(host.join("keep")).unwrap(), b"host file");
        assert_eq!(std::fs::read_dir(&host).unwrap().count(), 1);
        assert!(mounted_under(s.dir.path()).is_empty());
    }
    assert!(!std::path::Path::new("/tmp/escaped").exists());
}

#[test]
fn local_driver_mount_options() {
    let s = store();
    // tmpfs with a size: what the container writes lives in memory, within the size.
    s.ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=4m",
        "mem",
    ]);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["volume", "inspect", "mem"])).unwrap();
    assert_eq!(v[0]["Options"]["type"], "tmpfs");
    let out = s.ok(&[
        "run",
        "--rm",
        "-v",
        "mem:/m",
        "busybox",
        "sh",
        "-c",
        "grep ' /m ' /proc/mounts; echo hi > /m/f",
    ]);
    assert!(out.starts_with("tmpfs /m tmpfs"), "{out}");
    assert!(out.contains("size=4096k"), "{out}");
    let out = s.run(&[
        "run",
        "--rm",
        "-v",
        "mem:/m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/m/big",
        "bs=1M",
        "count=8",
    ]);
    assert_ne!(out.status.code(), Some(0), "the tmpfs size holds");
    assert_eq!(
        s.ok(&["run", "--rm", "-v", "mem:/m", "busybox", "cat", "/m/f"]),
        "hi\n"
    );
    s.ok(&["volume", "rm", "mem"]);
    // An image file with a filesystem, attached to a loop device on first use.
    let img = s.dir.path().join("vol.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let dev = format!("device={}", img.display());
    s.ok(&["volume", "create", "-o", "type=ext4", "-o", &dev, "disk"]);
    let out = s.ok(&[
        "run",
        "--rm",
        "-v",
        "disk:/d",
        "busybox",
        "sh",
        "-c",
        "grep ' /d ' /proc/mounts | cut -d' ' -f3; echo on-disk > /d/f",
    ]);
    assert_eq!(out, "ext4\n");
    s.ok(&["volume", "rm", "disk"]);
    assert!(!std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .unwrap()
        .stdout
        .windows(7)
        .any(|w| w == b"vol.img"));
    // o=bind: the volume is a host directory; removing the volume never deletes it.
    let host = s.dir.path().join("bound");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("precious"), b"keep me").unwrap();
    let dev = format!("device={}", host.display());
    s.ok(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &dev,
        "bnd",
    ]);
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "bnd:/b",
            "busybox",
            "cat",
            "/b/precious"
        ]),
        "keep me"
    );
    s.ok(&["volume", "rm", "bnd"]);
    assert_eq!(std::fs::read(host.join("precious")).unwrap(), b"keep me");
    // --mount's volume-opt= configures the volume it creates.
    let out = s.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=viaopt,dst=/o,volume-opt=type=tmpfs,volume-opt=device=tmpfs",
        "busybox",
        "sh",
        "-c",
        "grep ' /o ' /proc/mounts | cut -d' ' -f3",
    ]);
    assert_eq!(out, "tmpfs\n");
    s.ok(&["volume", "rm", "viaopt"]);
    // Options the local driver does not know are refused.
    let err = s.fails(&["volume", "create", "-o", "color=red", "x1"]);
    assert!(err.contains("invalid option \"color\""), "{err}");
    assert!(mounted_under(s.dir.path()).is_empty());
}

/// A plugin speaking the Docker volume plugin protocol (tests/volume_plugin.py) serves a
/// volume to containers: created, mounted for each run and unmounted after, removed.
#[test]
fn a_volume_plugin_serves_a_volume() {
    let s = store();
    let name = format!("strata-test-{}", std::process::id());
    std::fs::create_dir_all("/run/docker/plugins").unwrap();
    let socket = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
    let base = s.dir.path().join("plugin-volumes");
    let log = s.dir.path().join("plugin.log");
    struct Plugin(std::process::Child, PathBuf);
    impl Drop for Plugin {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_file(&self.1);
        }
    }
    let mut plugin = Plugin(
        std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/volume_plugin.py"
            ))
            .arg(&socket)
            .arg(&base)
            .arg(&log)
            .spawn()
            .unwrap(),
        socket.clone(),
    );
    // Until the plugin listens: a loaded machine took over 5 s to start python in CI.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !socket.exists() {
        if let Some(status) = plugin.0.try_wait().unwrap() {
            panic!("the test plugin exited before it listened: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the test plugin did not listen within a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.ok(&[
        "volume",
        "create",
        "-d",
        &name,
        "-o",
        "replicas=3",
        "remote",
    ]);
    assert_eq!(
        std::fs::read_to_string(base.join("remote.opts")).unwrap(),
        "{\"replicas\": \"3\"}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["volume", "inspect", "remote"])).unwrap();
    assert_eq!(v[0]["Driver"], name.as_str());
    s.ok(&[
        "run",
        "--name",
        "w",
        "-v",
        "remote:/data",
        "busybox",
        "sh",
        "-c",
        "echo via plugin > /data/f",
    ]);
    assert_eq!(
        std::fs::read(base.join("remote/f")).unwrap(),
        b"via plugin\n"
    );
    // inspect names the volume's own driver and the plugin's mount point.
    assert_eq!(
        s.ok(&["inspect", "-f", "{{range .Mounts}}{{.Driver}}{{end}}", "w"])
            .trim(),
        name.as_str()
    );
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "remote:/data",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "via plugin\n"
    );
    // In use by w: refused; then removed through the plugin.
    assert!(s
        .fails(&["volume", "rm", "remote"])
        .contains("volume is in use"));
    s.ok(&["rm", "w"]);
    s.ok(&["volume", "rm", "remote"]);
    assert!(!base.join("remote").exists());
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls
        .lines()
        .filter(|l| !l.starts_with("Plugin.Activate") && !l.starts_with("VolumeDriver.Path"))
        .collect();
    assert_eq!(
        calls,
        [
            "VolumeDriver.Create remote",
            "VolumeDriver.Mount remote",
            "VolumeDriver.Unmount remote",
            "VolumeDriver.Mount remote",
            "VolumeDriver.Unmount remote",
            "VolumeDriver.Remove remote",
        ]
    );
    // A driver with no plugin behind it is refused by name.
    let err = s.fails(&["volume", "create", "-d", "no-such-plugin", "x2"]);
    assert!(
        err.contains("volume driver \"no-such-plugin\" not found"),
        "{err}"
    );
    assert!(mounted_under(s.dir.path()).is_empty());
}
