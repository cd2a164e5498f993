//! A process killed (SIGKILL) at random points of a random workload, 50 times: the pool
//! must reopen, pass thin_check, and read back what its last commit holds (a block written
//! in place after that commit may hold the newer data instead: data writes are not
//! transactions, as on a disk).
//!
//! The workload runs in a child (this test binary again, `crash_worker`), which derives
//! every operation from a seed and the pool's devices; the parent replays the same
//! operations on its model up to the commit the pool reopened at.

mod common;

use common::files;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use strata_thinpool::{Pool, PoolConfig};

const BS: usize = 64 * 1024;
const VB: u64 = 200;

#[derive(Debug, Clone)]
enum Op {
    Write(u64, u64, u8),
    Discard(u64, u64),
    Snap(u64, u64),
    Delete(u64),
    Commit,
}

/// Device -> block -> fill byte.
type Model = BTreeMap<u64, HashMap<u64, u8>>;

/// The `i`th operation of the workload of `seed`, on a pool whose devices `model` lists.
fn op(rng: &mut rand::rngs::StdRng, model: &Model) -> Op {
    let devs: Vec<u64> = model.keys().copied().collect();
    let d = devs[rng.gen_range(0..devs.len())];
    match rng.gen_range(0..100) {
        0..=1 if devs.len() < 6 => Op::Snap(devs.last().unwrap() + 1, d),
        2 if devs.len() > 2 => Op::Delete(d),
        3..=12 => Op::Discard(d, rng.gen_range(0..VB)),
        13..=17 => Op::Commit,
        _ => Op::Write(d, rng.gen_range(0..VB), rng.gen_range(1..=255)),
    }
}

fn apply_model(model: &mut Model, op: &Op) {
    match op {
        Op::Write(d, vb, f) => {
            model.get_mut(d).unwrap().insert(*vb, *f);
        }
        Op::Discard(d, vb) => {
            model.get_mut(d).unwrap().remove(vb);
        }
        Op::Snap(n, o) => {
            let c = model[o].clone();
            model.insert(*n, c);
        }
        Op::Delete(d) => {
            model.remove(d);
        }
        Op::Commit => {}
    }
}

fn read_model(p: &mut Pool) -> Model {
    let mut m = Model::new();
    let mut buf = vec![0u8; BS];
    for (d, _) in p.devices().unwrap() {
        let mut blocks = HashMap::new();
        for vb in 0..VB {
            if p.mapping(d, vb).unwrap().is_some() {
                p.read_block(d, vb, &mut buf).unwrap();
                assert!(
                    buf.iter().all(|c| *c == buf[0]),
                    "dev {d} block {vb} is torn"
                );
                blocks.insert(vb, buf[0]);
            }
        }
        m.insert(d, blocks);
    }
    m
}

/// The child: runs the workload of `$SEED` on the pool in `$DIR` until it is killed.
#[test]
#[ignore = "run by crash_kills_never_lose_committed_data"]
fn crash_worker() {
    let dir = std::env::var("STRATA_THINPOOL_DIR").unwrap();
    let seed: u64 = std::env::var("STRATA_THINPOOL_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let (m, d) = files(Path::new(&dir));
    let mut p = Pool::open(m, d).unwrap();
    // Operations depend only on which devices exist.
    let mut model: Model = p
        .devices()
        .unwrap()
        .into_iter()
        .map(|(d, _)| (d, HashMap::new()))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    loop {
        let o = op(&mut rng, &model);
        match &o {
            Op::Write(d, vb, f) => p.write(*d, *vb, 0, &vec![*f; BS]).unwrap(),
            Op::Discard(d, vb) => p.discard(*d, *vb).unwrap(),
            Op::Snap(n, o) => p.create_snap(*n, *o).unwrap(),
            Op::Delete(d) => p.delete(*d).unwrap(),
            Op::Commit => p.commit().unwrap(),
        }
        apply_model(&mut model, &o);
    }
}

#[test]
fn crash_kills_never_lose_committed_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (m, d) = files(dir.path());
        let mut p = Pool::format(
            m,
            d,
            &PoolConfig {
                block_sectors: (BS / 512) as u32,
                data_blocks: 6000,
                metadata_blocks: 2048,
            },
        )
        .unwrap();
        p.create_thin(0).unwrap();
        p.create_thin(1).unwrap();
        p.commit().unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut kills_mid_work = 0;
    for round in 0..50u64 {
        let (m, d) = files(dir.path());
        let mut p = Pool::open(m, d).unwrap();
        let before = read_model(&mut p);
        let t0 = p.transaction_id();
        drop(p);
        let mut child = Command::new(&exe)
            .args(["crash_worker", "--exact", "--ignored", "--nocapture"])
            .env("STRATA_THINPOOL_DIR", dir.path())
            .env("STRATA_THINPOOL_SEED", round.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(50..600)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "round {round}: the worker stopped by itself: {status}"
        );

        let o = Command::new("thin_check")
            .arg(dir.path().join("meta"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "round {round}: thin_check: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (m, d) = files(dir.path());
        let mut p = Pool::open(m, d).unwrap();
        let commits = p.transaction_id() - t0;
        if commits > 0 {
            kills_mid_work += 1;
        }
        // Replay the worker's operations on the model, up to the commit the pool holds;
        // note the blocks written after it (they may have landed in place).
        let mut model = before;
        let mut wrng = rand::rngs::StdRng::seed_from_u64(round);
        let mut seen = 0;
        while seen < commits {
            let o = op(&mut wrng, &model);
            if matches!(o, Op::Commit) {
                seen += 1;
            }
            apply_model(&mut model, &o);
        }
        let mut later: HashMap<(u64, u64), HashSet<u8>> = HashMap::new();
        let mut after = model.clone();
        for _ in 0..20_000 {
            let o = op(&mut wrng, &after);
            if let Op::Write(d, vb, f) = o {
                later.entry((d, vb)).or_default().insert(f);
            }
            apply_model(&mut after, &o);
        }
        let got = read_model(&mut p);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            model.keys().collect::<Vec<_>>(),
            "round {round}: devices after {commits} commits"
        );
        for (d, blocks) in &model {
            for vb in 0..VB {
                let want = blocks.get(&vb).copied();
                let have = got[d].get(&vb).copied();
                if want == have {
                    continue;
                }
                let newer =
                    have.is_some_and(|h| later.get(&(*d, vb)).is_some_and(|s| s.contains(&h)));
                assert!(
                    want.is_some() && newer,
                    "round {round}: dev {d} block {vb}: committed {want:?}, read {have:?}"
                );
            }
            assert_eq!(p.details(*d).unwrap().mapped_blocks, blocks.len() as u64);
        }
    }
    assert!(
        kills_mid_work > 25,
        "most kills came after some commits ({kills_mid_work})"
    );
}
