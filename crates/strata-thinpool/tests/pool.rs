//! The pool against a model of what every device should read back, with Debian's
//! `thin_check` judging the metadata.

mod common;

use common::files;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use strata_thinpool::{Pool, PoolConfig};

fn thin_dump(dir: &Path) -> String {
    let o = Command::new("thin_dump")
        .arg(dir.join("meta"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn thin_check(dir: &Path) {
    let o = Command::new("thin_check")
        .arg(dir.join("meta"))
        .output()
        .expect("thin_check (thin-provisioning-tools)");
    assert!(
        o.status.success(),
        "thin_check refused the metadata:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

const BS: usize = 64 * 1024;

fn small_pool(dir: &Path, data_blocks: u64) -> Pool {
    let (m, d) = files(dir);
    Pool::format(
        m,
        d,
        &PoolConfig {
            block_sectors: (BS / 512) as u32,
            data_blocks,
            metadata_blocks: 1024,
        },
    )
    .unwrap()
}

#[test]
fn a_fresh_pool_passes_thin_check() {
    let dir = tempfile::tempdir().unwrap();
    drop(small_pool(dir.path(), 1000));
    thin_check(dir.path());
}

#[test]
fn devices_snapshots_and_writes_read_back_and_pass_thin_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = small_pool(dir.path(), 1000);
    p.create_thin(1).unwrap();
    for b in 0..20 {
        p.write(1, b, 0, &vec![b as u8 + 1; BS]).unwrap();
    }
    p.create_snap(2, 1).unwrap();
    p.write(1, 3, 100, b"origin changed").unwrap();
    p.write(2, 4, 0, b"snapshot changed").unwrap();
    p.write(2, 50, 10, b"new in snapshot").unwrap();
    p.commit().unwrap();
    thin_check(dir.path());
    let mut buf = vec![0u8; BS];
    p.read_block(2, 3, &mut buf).unwrap();
    assert!(
        buf.iter().all(|c| *c == 4),
        "the snapshot keeps the old block"
    );
    p.read_block(1, 3, &mut buf).unwrap();
    assert_eq!(&buf[100..114], b"origin changed");
    p.read_block(1, 4, &mut buf).unwrap();
    assert!(buf.iter().all(|c| *c == 5));
    p.read_block(2, 50, &mut buf).unwrap();
    assert_eq!(&buf[10..25], b"new in snapshot");
    assert!(buf[..10].iter().all(|c| *c == 0));
    assert_eq!(p.details(1).unwrap().mapped_blocks, 20);
    assert_eq!(p.details(2).unwrap().mapped_blocks, 21);
    // 20 shared, two copied (one per side), one new.
    assert_eq!(p.usage().data_used, 23);
    drop(p);
    let (m, d) = files(dir.path());
    let mut p = Pool::open(m, d).unwrap();
    p.read_block(2, 4, &mut buf).unwrap();
    assert_eq!(&buf[..16], b"snapshot changed");
    p.delete(1).unwrap();
    p.commit().unwrap();
    assert_eq!(p.usage().data_used, 21);
    thin_check(dir.path());
    let dump = thin_dump(dir.path());
    assert!(
        dump.contains(r#"<device dev_id="2" mapped_blocks="21""#),
        "{dump}"
    );
    assert!(!dump.contains(r#"dev_id="1""#), "{dump}");
}

/// What every device should read back: its blocks' contents (absent = zeros).
type Model = HashMap<u64, HashMap<u64, Vec<u8>>>;

fn verify(p: &mut Pool, model: &Model) {
    let mut buf = vec![0u8; BS];
    for (dev, blocks) in model {
        for vb in 0..VBLOCKS {
            p.read_block(*dev, vb, &mut buf).unwrap();
            match blocks.get(&vb) {
                Some(want) => assert!(buf == *want, "dev {dev} block {vb} differs"),
                None => assert!(
                    buf.iter().all(|c| *c == 0),
                    "dev {dev} block {vb} should be zeros"
                ),
            }
        }
        assert_eq!(
            p.details(*dev).unwrap().mapped_blocks,
            blocks.len() as u64,
            "dev {dev} mapped"
        );
    }
}

const VBLOCKS: u64 = 48;

/// 10,000 random operations (create, snapshot, write, discard, delete, commit) against a
/// model; every block checked along the way and at the end, thin_check after, and the
/// same again after a reopen.
#[test]
fn random_workload_matches_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = small_pool(dir.path(), 4096);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model: Model = HashMap::new();
    let mut next_dev = 0u64;
    for step in 0..10_000 {
        let devs: Vec<u64> = {
            let mut d: Vec<u64> = model.keys().copied().collect();
            d.sort();
            d
        };
        match rng.gen_range(0..100) {
            0..=2 if devs.len() < 12 => {
                p.create_thin(next_dev).unwrap();
                model.insert(next_dev, HashMap::new());
                next_dev += 1;
            }
            3..=6 if !devs.is_empty() && devs.len() < 12 => {
                let origin = devs[rng.gen_range(0..devs.len())];
                p.create_snap(next_dev, origin).unwrap();
                let copy = model[&origin].clone();
                model.insert(next_dev, copy);
                next_dev += 1;
            }
            7 if devs.len() > 3 => {
                let d = devs[rng.gen_range(0..devs.len())];
                p.delete(d).unwrap();
                model.remove(&d);
            }
            8..=15 if !devs.is_empty() => {
                let d = devs[rng.gen_range(0..devs.len())];
                let vb = rng.gen_range(0..VBLOCKS);
                p.discard(d, vb).unwrap();
                model.get_mut(&d).unwrap().remove(&vb);
            }
            16..=18 => p.commit().unwrap(),
            19..=25 if !devs.is_empty() => {
                let d = devs[rng.gen_range(0..devs.len())];
                let vb = rng.gen_range(0..VBLOCKS);
                let mut buf = vec![0u8; BS];
                p.read_block(d, vb, &mut buf).unwrap();
                let want = model[&d].get(&vb).cloned().unwrap_or_else(|| vec![0u8; BS]);
                assert!(buf == want, "step {step}: dev {d} block {vb} differs");
            }
            _ if !devs.is_empty() => {
                let d = devs[rng.gen_range(0..devs.len())];
                let vb = rng.gen_range(0..VBLOCKS);
                let off = rng.gen_range(0..BS);
                let len = rng.gen_range(1..=BS - off);
                let fill: u8 = rng.gen();
                let bytes = vec![fill; len];
                p.write(d, vb, off, &bytes).unwrap();
                let blk = model
                    .get_mut(&d)
                    .unwrap()
                    .entry(vb)
                    .or_insert_with(|| vec![0u8; BS]);
                blk[off..off + len].copy_from_slice(&bytes);
            }
            _ => {}
        }
    }
    verify(&mut p, &model);
    p.commit().unwrap();
    thin_check(dir.path());
    drop(p);
    let (m, d) = files(dir.path());
    let mut p = Pool::open(m, d).unwrap();
    verify(&mut p, &model);
    // Every device gone: every data block back.
    for d in model.keys() {
        p.delete(*d).unwrap();
    }
    p.commit().unwrap();
    assert_eq!(p.usage().data_used, 0);
    thin_check(dir.path());
}

/// Many blocks per device, so mapping trees grow several levels deep, split, and shrink
/// again through discards and deletes (whole-block writes; the model keeps one fill byte
/// per block).
#[test]
fn deep_trees_split_and_merge_and_match_the_model() {
    const VB: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let mut p = small_pool(dir.path(), 20000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut model: HashMap<u64, HashMap<u64, u8>> = HashMap::new();
    let mut next_dev = 0u64;
    let block = |fill: u8| vec![fill; BS];
    let mut most = 0;
    for step in 0..10_000 {
        let devs: Vec<u64> = {
            let mut d: Vec<u64> = model.keys().copied().collect();
            d.sort();
            d
        };
        let pick = |rng: &mut rand::rngs::StdRng| devs[rng.gen_range(0..devs.len())];
        match rng.gen_range(0..100) {
            0 if devs.len() < 3 => {
                p.create_thin(next_dev).unwrap();
                model.insert(next_dev, HashMap::new());
                next_dev += 1;
            }
            1 if !devs.is_empty() && devs.len() < 4 => {
                let o = pick(&mut rng);
                p.create_snap(next_dev, o).unwrap();
                let c = model[&o].clone();
                model.insert(next_dev, c);
                next_dev += 1;
            }
            2 if devs.len() > 2 => {
                let d = pick(&mut rng);
                p.delete(d).unwrap();
                model.remove(&d);
            }
            3..=4 => p.commit().unwrap(),
            5..=8 if !devs.is_empty() => {
                // A run of discards: trees shrink and nodes merge.
                let d = pick(&mut rng);
                let start = rng.gen_range(0..VB);
                for vb in start..(start + rng.gen_range(1..40)).min(VB) {
                    p.discard(d, vb).unwrap();
                    model.get_mut(&d).unwrap().remove(&vb);
                }
            }
            _ if !devs.is_empty() => {
                let d = pick(&mut rng);
                let vb = rng.gen_range(0..VB);
                let fill = rng.gen_range(1..=255u8);
                match p.write(d, vb, 0, &block(fill)) {
                    Ok(()) => {
                        let m = model.get_mut(&d).unwrap();
                        m.insert(vb, fill);
                        most = most.max(m.len());
                    }
                    Err(strata_thinpool::Error::NoSpace(m)) => {
                        assert!(m.contains("dm.min_free_space"), "{m}");
                    }
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            _ => {}
        }
    }
    p.commit().unwrap();
    thin_check(dir.path());
    let mut buf = vec![0u8; BS];
    for (d, blocks) in &model {
        for vb in 0..VB {
            p.read_block(*d, vb, &mut buf).unwrap();
            let want = blocks.get(&vb).copied().unwrap_or(0);
            assert!(buf.iter().all(|c| *c == want), "dev {d} block {vb}");
        }
        assert_eq!(p.details(*d).unwrap().mapped_blocks, blocks.len() as u64);
    }
    assert!(
        most > 2 * 252,
        "some mapping tree needed several leaves ({most} mappings at most)"
    );
}

#[test]
fn exhaustion_is_a_clear_error_and_damages_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = small_pool(dir.path(), 100);
    p.create_thin(1).unwrap();
    let mut written = 0;
    let err = loop {
        match p.write(1, written, 0, &vec![written as u8 + 1; BS]) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    // 10% of the pool is kept free by default (dm.min_free_space).
    assert_eq!(written, 90);
    let msg = err.to_string();
    assert!(
        msg.contains("exhausted") && msg.contains("dm.min_free_space"),
        "{msg}"
    );
    // Writes in place to blocks the device owns still work at the limit.
    p.write(1, 0, 0, b"still writable").unwrap();
    p.commit().unwrap();
    thin_check(dir.path());
    // Without the reserve the pool fills to the last block, then refuses.
    p.set_min_free_percent(0);
    for vb in written..100 {
        p.write(1, vb, 0, &vec![7; BS]).unwrap();
    }
    assert!(matches!(
        p.write(1, 100, 0, &[1]),
        Err(strata_thinpool::Error::NoSpace(_))
    ));
    p.commit().unwrap();
    thin_check(dir.path());
    let mut buf = vec![0u8; BS];
    p.read_block(1, 5, &mut buf).unwrap();
    assert!(buf.iter().all(|c| *c == 6));
    // Deleting gives the space back (after the commit that makes the deletion durable).
    p.create_snap(2, 1).unwrap();
    p.delete(1).unwrap();
    p.commit().unwrap();
    assert_eq!(
        p.usage().data_used,
        100,
        "the snapshot still holds every block"
    );
    p.delete(2).unwrap();
    p.commit().unwrap();
    assert_eq!(p.usage().data_used, 0);
    thin_check(dir.path());
    use std::os::unix::fs::MetadataExt;
    let on_disk = std::fs::metadata(dir.path().join("data")).unwrap().blocks() * 512;
    assert!(
        on_disk < BS as u64,
        "freed blocks are punched out of the data file ({on_disk} bytes left)"
    );
}

#[test]
fn an_autoextending_pool_grows_its_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = small_pool(dir.path(), 100);
    p.set_autoextend(80, 50);
    p.create_thin(1).unwrap();
    for vb in 0..300 {
        p.write(1, vb, 0, &vec![vb as u8; BS]).unwrap();
    }
    let u = p.usage();
    assert!(u.data_total >= 300 * 100 / 80, "{u:?}");
    assert_eq!(u.data_used, 300);
    assert_eq!(
        std::fs::metadata(dir.path().join("data")).unwrap().len(),
        u.data_total * BS as u64
    );
    p.commit().unwrap();
    thin_check(dir.path());
    drop(p);
    let (m, d) = files(dir.path());
    let mut p = Pool::open(m, d).unwrap();
    assert_eq!(p.usage(), u);
    let mut buf = vec![0u8; BS];
    p.read_block(1, 299, &mut buf).unwrap();
    assert!(buf.iter().all(|c| *c == (299 % 256) as u8));
}
