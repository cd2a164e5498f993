//! The image commands end to end, through the real binary, on every storage driver.
//! Needs root: layers are mounted.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;

fn base_layer() -> Vec<u8> {
    Layer::new()
        .dir("bin/")
        .file("bin/tool", b"#!/bin/sh\necho tool\n")
        .symlink("bin/alias", "tool")
        .hardlink("bin/tool-hard", "bin/tool")
        .dir("etc/")
        .file("etc/os-release", b"NAME=strata-test\n")
        .dir("lib/")
        .file("lib/keep", b"keep")
        .dir("opt/")
        .file("opt/old", b"old")
        .build()
}

fn top_layer() -> Vec<u8> {
    Layer::new()
        .dir("etc/")
        .file("etc/app.conf", b"v=1\n")
        .whiteout("lib/keep")
        .dir("opt/")
        .opaque("opt")
        .file("opt/new", b"new")
        .build()
}

fn import_basic(driver: &'static str) {
    let s = Store::new(driver);
    let tar = s.file("rootfs.tar", &base_layer());
    let id = s.ok(&[
        "import",
        "-c",
        "CMD [\"/bin/tool\"]",
        "-c",
        "ENV A=1",
        "-m",
        "my import",
        tar.to_str().unwrap(),
        "base:1",
    ]);
    assert!(
        id.trim().starts_with("sha256:") && id.trim().len() == 71,
        "{id}"
    );
    let images = s.ok(&["images"]);
    assert!(
        images.starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{images}"
    );
    assert!(images.contains("base         1         "), "{images}");
    let cmd = s.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Cmd}} {{json .Config.Env}} {{.GraphDriver.Name}}",
        "base:1",
    ]);
    assert_eq!(cmd.trim(), format!("[\"/bin/tool\"] [\"A=1\"] {driver}"));
    let hist = s.ok(&["history", "--format", "{{.Comment}}", "base:1"]);
    assert_eq!(hist.trim(), "my import");
    // The same content from stdin is the same layer: one layer on disk.
    let out = s.run_stdin(&["import", "-", "base:stdin"], &base_layer());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.ok(&["info", "--format", "{{.Layers}}"]).trim(), "1");
    s.check_clean();
}

fn layers_and_sharing(driver: &'static str) {
    let s = Store::new(driver);
    let mut a = Archive::new();
    let one = a.image(&["app:1"], &[base_layer(), top_layer()]);
    let two = a.image(
        &["other:latest"],
        &[base_layer(), Layer::new().file("other", b"x").build()],
    );
    let archive = s.file("images.tar", &a.build());
    let out = s.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: app:1\nLoaded image: other:latest\n");
    assert_eq!(s.ok(&["images", "-q", "--no-trunc"]).lines().count(), 2);
    assert!(s
        .ok(&["image", "inspect", "-f", "{{.Id}}", "app:1"])
        .contains(&one));
    assert!(s
        .ok(&["image", "inspect", "-f", "{{.Id}}", "other"])
        .contains(&two));
    assert_eq!(
        s.ok(&["info", "--format", "{{.Layers}}"]).trim(),
        "3",
        "the shared base layer is stored once"
    );
    // The two-layer image's filesystem is the union with whiteouts and opaque dirs applied.
    let mnt = s.ok(&["image", "mount", "app:1"]);
    let m = std::path::Path::new(mnt.trim());
    assert_eq!(
        std::fs::read_to_string(m.join("etc/os-release")).unwrap(),
        "NAME=strata-test\n"
    );
    assert_eq!(
        std::fs::read_to_string(m.join("etc/app.conf")).unwrap(),
        "v=1\n"
    );
    assert!(!m.join("lib/keep").exists(), "whiteout");
    assert!(
        !m.join("opt/old").exists() && m.join("opt/new").exists(),
        "opaque dir"
    );
    assert_eq!(
        std::fs::read_link(m.join("bin/alias")).unwrap().to_str(),
        Some("tool")
    );
    assert_eq!(
        std::fs::metadata(m.join("bin/tool")).unwrap().ino(),
        std::fs::metadata(m.join("bin/tool-hard")).unwrap().ino()
    );
    assert!(s.fails(&["rmi", "app:1"]).contains("mounted"));
    s.ok(&["image", "umount", "app:1"]);
    // History: newest first, sizes on layer entries.
    let hist = s.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.CreatedBy}}",
        "app:1",
    ]);
    let lines: Vec<&str> = hist.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("sha256:") && lines[0].ends_with("layer 1"),
        "{hist}"
    );
    assert!(lines[1].starts_with("<missing>|"), "{hist}");
    // Shared vs unique size.
    let df = s.ok(&["system", "df", "-v"]);
    assert!(
        df.contains("SHARED SIZE") && df.contains("UNIQUE SIZE"),
        "{df}"
    );
    let shared = s.ok(&["images", "--format", "{{.Repository}} {{.SharedSize}}"]);
    assert!(
        shared.lines().all(|l| !l.ends_with(" 0B")),
        "both images share the base layer: {shared}"
    );
    // Removing one image keeps the shared layer for the other.
    let out = s.ok(&["rmi", "other"]);
    assert!(
        out.contains("Untagged: other:latest") && out.contains(&format!("Deleted: sha256:{two}")),
        "{out}"
    );
    assert_eq!(s.ok(&["info", "--format", "{{.Layers}}"]).trim(), "2");
    let mnt = s.ok(&["image", "mount", "app:1"]);
    assert!(std::path::Path::new(mnt.trim()).join("bin/tool").exists());
    s.ok(&["image", "umount", "app:1"]);
    s.ok(&["rmi", "app:1"]);
    assert_eq!(s.ok(&["info", "--format", "{{.Layers}}"]).trim(), "0");
    let blobs = std::fs::read_dir(s.root().join("content/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "no blob outlives its images");
    s.check_clean();
    assert!(mounted_under(s.dir.path()).is_empty());
}

fn save_load_round_trip(driver: &'static str) {
    let s = Store::new(driver);
    let mut a = Archive::new();
    let id = a.image(&["app:1", "app:latest"], &[base_layer(), top_layer()]);
    s.ok(&["load", "-i", s.file("in.tar", &a.build()).to_str().unwrap()]);
    let out1 = s.dir.path().join("out1.tar");
    let out2 = s.dir.path().join("out2.tar");
    s.ok(&["save", "-o", out1.to_str().unwrap(), "app:1", "app:latest"]);
    s.ok(&["save", "-o", out2.to_str().unwrap(), "app:1", "app:latest"]);
    assert_eq!(
        std::fs::read(&out1).unwrap(),
        std::fs::read(&out2).unwrap(),
        "save is deterministic"
    );
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&out1).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    for n in ["manifest.json", "index.json", "oci-layout", "repositories"] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    // A fresh store loads it with the same ID and both tags.
    let t = Store::new(driver);
    let out = t.ok(&["load", "-i", out1.to_str().unwrap()]);
    assert!(
        out.contains("Loaded image: app:1") && out.contains("Loaded image: app:latest"),
        "{out}"
    );
    assert_eq!(
        t.ok(&["images", "--no-trunc", "--format", "{{.ID}} {{.Tag}}"])
            .trim(),
        format!("sha256:{id} 1\nsha256:{id} latest")
    );
    // Loading it again adds nothing: layers and blobs already present are skipped.
    let before = t.state();
    t.ok(&["load", "-i", out1.to_str().unwrap()]);
    assert_eq!(before, t.state());
    // Plain OCI layout (no manifest.json) loads too, names from index.json annotations.
    let oci = strip_entries(
        &std::fs::read(&out1).unwrap(),
        &["manifest.json", "repositories"],
    );
    let u = Store::new(driver);
    let out = u.run_stdin(&["load"], &oci);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        u.ok(&["images", "--no-trunc", "--format", "{{.ID}}"])
            .lines()
            .next()
            .unwrap(),
        format!("sha256:{id}")
    );
    t.check_clean();
    u.check_clean();
}

fn strip_entries(tar_bytes: &[u8], drop: &[&str]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut a = tar::Archive::new(tar_bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        if drop.contains(&p.as_str()) {
            continue;
        }
        let mut h = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.append_data(&mut h, &p, &data[..]).unwrap();
    }
    out.into_inner().unwrap()
}

fn two_hundred_layers(driver: &'static str) {
    let s = Store::new(driver);
    let layers: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            Layer::new()
                .dir("data/")
                .file(
                    &format!("data/layer-{i:03}"),
                    format!("content {i}").as_bytes(),
                )
                .build()
        })
        .collect();
    let mut a = Archive::new();
    a.image(&["deep:200"], &layers);
    s.ok(&[
        "load",
        "-i",
        s.file("deep.tar", &a.build()).to_str().unwrap(),
    ]);
    assert_eq!(s.ok(&["history", "-q", "deep:200"]).lines().count(), 200);
    let mnt = s.ok(&["image", "mount", "deep:200"]);
    let m = std::path::Path::new(mnt.trim());
    assert_eq!(
        std::fs::read_to_string(m.join("data/layer-000")).unwrap(),
        "content 0",
        "bottom layer"
    );
    assert_eq!(
        std::fs::read_to_string(m.join("data/layer-199")).unwrap(),
        "content 199",
        "top layer"
    );
    assert_eq!(std::fs::read_dir(m.join("data")).unwrap().count(), 200);
    s.ok(&["image", "umount", "deep:200"]);
    assert!(mounted_under(s.dir.path()).is_empty());
}

fn hostile_imports_change_nothing(driver: &'static str) {
    let s = Store::new(driver);
    s.ok(&[
        "import",
        s.file("ok.tar", &base_layer()).to_str().unwrap(),
        "ok:1",
    ]);
    let before = s.state();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            Layer::new()
                .raw("../../escape", tar::EntryType::Regular, None, b"x")
                .build(),
            "..",
        ),
        (
            "hardlink to a host file",
            Layer::new()
                .raw("hl", tar::EntryType::Link, Some("/etc/passwd"), b"")
                .build(),
            "hard link",
        ),
        (
            "bare whiteout",
            Layer::new()
                .raw("dir/.wh.", tar::EntryType::Regular, None, b"")
                .build(),
            ".wh.",
        ),
        ("truncated", base_layer()[..1000].to_vec(), "truncated"),
    ];
    for (what, tar, needle) in cases {
        let err = s.fails(&["import", s.file("bad.tar", &tar).to_str().unwrap(), "bad:1"]);
        assert!(err.contains(needle), "{what}: {err}");
        assert!(err.starts_with("Error: "), "{what}: {err}");
        assert_eq!(before, s.state(), "{what} left the store as it was");
    }
    // Symlink-then-write lands inside the layer, never on the host: through a link to `/`
    // the file is written at the layer's root; through a link to a host directory the
    // path is looked up inside the layer, where it does not exist, and the import fails.
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let evil = Layer::new()
        .symlink("link", "/")
        .file("link/pwned", b"x")
        .build();
    s.ok(&[
        "import",
        s.file("evil.tar", &evil).to_str().unwrap(),
        "evil:1",
    ]);
    let mnt = s.ok(&["image", "mount", "evil:1"]);
    assert!(std::path::Path::new(mnt.trim()).join("pwned").exists());
    s.ok(&["image", "umount", "evil:1"]);
    let evil = Layer::new()
        .symlink("link", outside.to_str().unwrap())
        .file("link/pwned", b"x")
        .build();
    let err = s.fails(&[
        "import",
        s.file("evil2.tar", &evil).to_str().unwrap(),
        "evil:2",
    ]);
    assert!(err.contains("link/pwned"), "{err}");
    assert!(!outside.join("pwned").exists() && !std::path::Path::new("/pwned").exists());
    s.check_clean();
}

fn gzip_bomb_is_refused(driver: &'static str) {
    use std::io::Write;
    let s = Store::new(driver);
    let size: u64 = 1 << 30;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    {
        let mut b = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(
            &mut h,
            "bomb",
            std::io::Read::take(std::io::repeat(b'A'), size),
        )
        .unwrap();
        b.finish().unwrap();
    }
    gz.flush().unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 4 << 20, "a {} byte archive", bomb.len());
    let before = s.state();
    let err = s.fails(&["import", s.file("bomb.tar.gz", &bomb).to_str().unwrap()]);
    assert!(err.contains("decompression bomb"), "{err}");
    assert_eq!(before, s.state());
    s.check_clean();
}

fn bad_archives_change_nothing(driver: &'static str) {
    let s = Store::new(driver);
    let mut good = Archive::new();
    good.image(&["good:1"], &[base_layer()]);
    s.ok(&[
        "load",
        "-i",
        s.file("good.tar", &good.build()).to_str().unwrap(),
    ]);
    let before = s.state();
    let layer = top_layer();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    // A layer whose content is not its diff ID.
    let mut a = Archive::new();
    let config = serde_json::to_vec(&serde_json::json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[format!("sha256:{}", sha256_hex(b"something else"))]}})).unwrap();
    a.put("c.json", &config);
    a.put("l/layer.tar", &layer);
    a.put(
        "manifest.json",
        br#"[{"Config":"c.json","RepoTags":["bad:1"],"Layers":["l/layer.tar"]}]"#,
    );
    cases.push(("diff ID mismatch", a.build_raw(), "diff ID"));
    let mut a = Archive::new();
    a.put(
        "manifest.json",
        br#"[{"Config":"missing.json","RepoTags":["bad:1"],"Layers":[]}]"#,
    );
    cases.push(("missing config", a.build_raw(), "missing.json"));
    let mut a = Archive::new();
    a.put("c.json", b"this is not json");
    a.put(
        "manifest.json",
        br#"[{"Config":"c.json","RepoTags":["bad:1"],"Layers":[]}]"#,
    );
    cases.push(("config not JSON", a.build_raw(), "c.json"));
    let mut a = Archive::new();
    a.put("index.json", format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":10}}]}}"#, "ab".repeat(32)).as_bytes());
    cases.push(("index points outside", a.build_raw(), "not in the archive"));
    let mut a = Archive::new();
    a.put(
        &format!("blobs/sha256/{}", "cd".repeat(32)),
        b"content that is not that digest",
    );
    cases.push(("blob not matching its name", a.build_raw(), "digest"));
    let mut g = Archive::new();
    g.image(&["trunc:1"], &[top_layer()]);
    let full = g.build();
    cases.push((
        "truncated archive",
        full[..full.len() / 2].to_vec(),
        "truncated",
    ));
    cases.push(("not an archive", b"hello".repeat(200), "not a valid tar"));
    for (what, bytes, needle) in cases {
        let err = s.fails(&["load", "-i", s.file("bad.tar", &bytes).to_str().unwrap()]);
        assert!(err.contains(needle), "{what}: {err}");
        assert_eq!(before, s.state(), "{what} left the store as it was");
    }
    s.check_clean();
}

fn rmi_and_tags(driver: &'static str) {
    let s = Store::new(driver);
    s.ok(&[
        "import",
        s.file("r.tar", &base_layer()).to_str().unwrap(),
        "one:1",
    ]);
    s.ok(&["tag", "one:1", "two:2"]);
    let id = s.ok(&["images", "-q"]).lines().next().unwrap().to_string();
    assert!(s
        .fails(&["tag", &id, "Bad:Name"])
        .contains("must be lowercase"));
    let err = s.fails(&["rmi", &id]);
    assert!(err.contains("must be forced"), "{err}");
    assert!(s.ok(&["rmi", "two:2"]).contains("Untagged: two:2"));
    s.ok(&["tag", &id, "three"]);
    let out = s.ok(&["rmi", "-f", &id]);
    assert!(
        out.contains("Untagged: one:1")
            && out.contains("Untagged: three:latest")
            && out.contains("Deleted: sha256:"),
        "{out}"
    );
    assert!(s.fails(&["rmi", "one:1"]).contains("No such image: one:1"));
    assert!(s.fails(&["tag", "nope", "x"]).contains("No such image"));
    // Dangling images and prune.
    s.ok(&["import", s.file("d.tar", &top_layer()).to_str().unwrap()]);
    assert_eq!(
        s.ok(&[
            "images",
            "--filter",
            "dangling=true",
            "--format",
            "{{.Repository}}:{{.Tag}}"
        ])
        .trim(),
        "<none>:<none>"
    );
    let out = s.ok(&["image", "prune", "-f"]);
    assert!(
        out.contains("deleted: sha256:") && out.contains("Total reclaimed space:"),
        "{out}"
    );
    assert_eq!(s.ok(&["images", "-q"]), "");
    s.check_clean();
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
    import_basic,
    layers_and_sharing,
    save_load_round_trip,
    two_hundred_layers,
    hostile_imports_change_nothing,
    gzip_bomb_is_refused,
    bad_archives_change_nothing,
    rmi_and_tags
);
