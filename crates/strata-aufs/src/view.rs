//! A directory's merged view: which branch each visible name comes from.
//!
//! A directory is read once from every branch that holds it (top first, stopping at an
//! opaque marker) and merged; lookups and listings are then answered from memory. Lower
//! branches do not change while mounted and the writable branch changes only through this
//! filesystem, which updates the view as it goes.

use fuser::FileType;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

pub(crate) const WH_PREFIX: &[u8] = b".wh.";
pub(crate) const WH_META_PREFIX: &[u8] = b".wh..wh.";
pub(crate) const OPAQUE: &str = ".wh..wh..opq";

/// A name the filesystem keeps for itself (whiteouts and aufs metadata): never visible.
pub(crate) fn reserved(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

pub(crate) fn whiteout_name(name: &OsStr) -> OsString {
    let mut w = OsString::from(".wh.");
    w.push(name);
    w
}

/// One visible name.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The topmost branch holding it.
    pub branch: u16,
    pub kind: FileType,
    /// Its inode number in that branch.
    pub ino: u64,
    /// For a directory: the branches holding a directory of this name, top first, up to a
    /// whiteout or a non-directory of the same name.
    pub dirs: Vec<u16>,
    /// A lower branch has this name (or a whiteout hides one): removing or renaming it must
    /// leave a whiteout.
    pub shadows: bool,
    /// No lower branch can add to it any more (build-time only).
    sealed: bool,
}

impl Entry {
    pub fn new(branch: u16, kind: FileType, ino: u64, shadows: bool) -> Entry {
        Entry {
            branch,
            kind,
            ino,
            dirs: if kind == FileType::Directory {
                vec![branch]
            } else {
                Vec::new()
            },
            shadows,
            sealed: true,
        }
    }
}

/// A listing as readdir hands it out: (offset cookie, name, kind, inode number), in cookie
/// order.
pub(crate) type Listing = Arc<Vec<(u64, OsString, FileType, u64)>>;

/// A name's readdir offset: a hash of the name, stable while the name stays, above the
/// offsets of `.` and `..` (1 and 2) and below 2^62 (the kernel keeps offsets signed).
pub(crate) fn cookie(name: &OsStr) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same name gets the same cookie in every process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    (h.finish() & ((1 << 62) - 1)).max(3)
}

#[derive(Debug)]
pub(crate) struct DirView {
    /// The branches this directory's contents come from, top first.
    pub dirs: Vec<u16>,
    pub entries: HashMap<OsString, Entry>,
    /// Names whited out here: a new entry of such a name hides a lower one.
    pub hidden: HashSet<OsString>,
    /// The last listing built, until the view changes.
    pub listing: Option<Listing>,
}

impl DirView {
    /// Merges the directory from each of `dirs` (top first); `read(b)` lists branch `b`'s
    /// copy as (name, kind, inode number), `None` where the branch has none; `wh(b)` says
    /// whether branch `b`'s whiteouts and opaque markers are in effect. Its maps hash with
    /// `hasher`: one per union, so no thread seeds its own.
    pub fn build(
        hasher: &RandomState,
        dirs: &[u16],
        wh: impl Fn(u16) -> bool,
        mut read: impl FnMut(u16) -> std::io::Result<Option<Vec<(OsString, FileType, u64)>>>,
    ) -> std::io::Result<DirView> {
        let mut v = DirView {
            dirs: Vec::new(),
            entries: HashMap::with_hasher(hasher.clone()),
            hidden: HashSet::with_hasher(hasher.clone()),
            listing: None,
        };
        for &b in dirs {
            let Some(list) = read(b)? else { continue };
            v.dirs.push(b);
            let mut whiteouts = Vec::new();
            let mut opaque = false;
            for (name, kind, ino) in list {
                let nb = name.as_bytes();
                if nb.starts_with(WH_PREFIX) && !wh(b) {
                    continue;
                }
                if nb.starts_with(WH_META_PREFIX) {
                    opaque |= nb == OPAQUE.as_bytes();
                    continue;
                }
                if nb.starts_with(WH_PREFIX) {
                    whiteouts.push(OsString::from_vec(nb[WH_PREFIX.len()..].to_vec()));
                    continue;
                }
                match v.entries.get_mut(&name) {
                    Some(e) => {
                        e.shadows = true;
                        if e.kind == FileType::Directory && kind == FileType::Directory && !e.sealed
                        {
                            e.dirs.push(b);
                        } else {
                            e.sealed = true;
                        }
                    }
                    None if v.hidden.contains(&name) => {}
                    None => {
                        let mut e = Entry::new(b, kind, ino, false);
                        e.sealed = false;
                        v.entries.insert(name, e);
                    }
                }
            }
            // A branch's whiteouts hide what lies below it, not its own names.
            for t in whiteouts {
                match v.entries.get_mut(&t) {
                    Some(e) => {
                        e.sealed = true;
                        e.shadows = true;
                    }
                    None => {
                        v.hidden.insert(t);
                    }
                }
            }
            if opaque {
                break;
            }
        }
        for e in v.entries.values_mut() {
            e.sealed = true;
        }
        Ok(v)
    }

    pub fn insert(&mut self, name: OsString, e: Entry) {
        self.listing = None;
        self.entries.insert(name, e);
    }

    pub fn remove(&mut self, name: &OsStr, whited_out: bool) -> Option<Entry> {
        self.listing = None;
        if whited_out {
            self.hidden.insert(name.to_os_string());
        }
        self.entries.remove(name)
    }

    pub fn entry_mut(&mut self, name: &OsStr) -> Option<&mut Entry> {
        self.listing = None;
        self.entries.get_mut(name)
    }
}

/// Resolves one name of a directory without merging the directory: `look(b, n)` tells
/// what branch `b` holds under name `n` (kind and inode number), for `b` in `dirs`, the
/// directory's copies top first down to an opaque one; `wh` as for [`DirView::build`].
/// Gives the entry [`DirView::build`] would make for the name, `None` where it makes none
/// (absent or whited out), and stops as soon as the lower branches can change neither.
/// Costs at most two lookups per branch (one where whiteouts are not in effect), where a
/// merge reads every branch's whole directory: the cheaper way to find a few names in a
/// directory held by many branches.
pub(crate) fn probe(
    dirs: &[u16],
    wh: impl Fn(u16) -> bool,
    name: &OsStr,
    mut look: impl FnMut(u16, &OsStr) -> std::io::Result<Option<(FileType, u64)>>,
) -> std::io::Result<Option<Entry>> {
    let whiteout = whiteout_name(name);
    let mut found: Option<Entry> = None;
    for &b in dirs {
        if let Some((kind, ino)) = look(b, name)? {
            match &mut found {
                None => {
                    let mut e = Entry::new(b, kind, ino, false);
                    // Only a directory can take more branches.
                    e.sealed = kind != FileType::Directory;
                    found = Some(e);
                }
                Some(e) => {
                    e.shadows = true;
                    if e.kind == FileType::Directory && kind == FileType::Directory && !e.sealed {
                        e.dirs.push(b);
                    } else {
                        e.sealed = true;
                    }
                }
            }
        }
        if found.as_ref().is_some_and(|e| e.sealed && e.shadows) {
            break;
        }
        if wh(b) && look(b, &whiteout)?.is_some() {
            // A branch's whiteout hides what lies below it, not its own name.
            match &mut found {
                Some(e) => {
                    e.sealed = true;
                    e.shadows = true;
                    break;
                }
                None => return Ok(None),
            }
        }
    }
    Ok(found.map(|mut e| {
        e.sealed = true;
        e
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use FileType::{Directory as D, RegularFile as F};

    /// Every branch's whiteouts in effect but those of the branches in `no_wh`.
    fn build_with(branches: Vec<Vec<(&str, FileType)>>, no_wh: &[u16]) -> DirView {
        let dirs: Vec<u16> = (0..branches.len() as u16).collect();
        DirView::build(
            &RandomState::new(),
            &dirs,
            |b| !no_wh.contains(&b),
            |b| {
                Ok(Some(
                    branches[b as usize]
                        .iter()
                        .enumerate()
                        .map(|(i, (n, k))| (OsString::from(n), *k, i as u64 + 10))
                        .collect(),
                ))
            },
        )
        .unwrap()
    }

    fn build(branches: Vec<Vec<(&str, FileType)>>) -> DirView {
        build_with(branches, &[])
    }

    #[test]
    fn leftmost_wins_and_whiteouts_hide_lower_names() {
        let v = build(vec![
            vec![("a", F), (".wh.b", F), ("d", D)],
            vec![("a", F), ("b", F), ("c", F), ("d", D), (".wh.d", F)],
            vec![("d", D), ("e", F)],
        ]);
        assert_eq!(v.entries[OsStr::new("a")].branch, 0);
        assert!(v.entries[OsStr::new("a")].shadows);
        assert!(!v.entries.contains_key(OsStr::new("b")));
        assert_eq!(v.entries[OsStr::new("c")].branch, 1);
        // d merges branches 0 and 1; branch 1's whiteout of d hides branch 2's d.
        assert_eq!(v.entries[OsStr::new("d")].dirs, vec![0, 1]);
        assert_eq!(v.entries[OsStr::new("e")].branch, 2);
        assert!(v.hidden.contains(OsStr::new("b")));
    }

    #[test]
    fn opaque_directory_stops_the_merge_and_meta_names_are_hidden() {
        let v = build(vec![
            vec![("x", F), (OPAQUE, F), (".wh..wh.plnk", D)],
            vec![("y", F)],
        ]);
        assert_eq!(v.dirs, vec![0]);
        assert_eq!(v.entries.len(), 1);
        assert!(v.entries.contains_key(OsStr::new("x")));
    }

    #[test]
    fn whiteouts_of_a_branch_without_them_in_effect_hide_nothing() {
        let layers = || {
            vec![
                vec![("a", F), (".wh.b", F), (OPAQUE, F)],
                vec![("b", F), ("c", F)],
            ]
        };
        let v = build_with(layers(), &[0]);
        assert_eq!(v.dirs, vec![0, 1]);
        assert_eq!(v.entries.len(), 3);
        assert!(v.hidden.is_empty());
        let v = build(layers());
        assert_eq!(v.dirs, vec![0]);
        assert_eq!(v.entries.len(), 1);
    }

    #[test]
    fn a_file_above_a_directory_ends_the_directory_merge() {
        let v = build(vec![vec![("d", D)], vec![("d", F)], vec![("d", D)]]);
        assert_eq!(v.entries[OsStr::new("d")].dirs, vec![0]);
        assert!(v.entries[OsStr::new("d")].shadows);
    }
    #[test]
    fn probing_a_name_agrees_with_the_merge() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let names = ["a", "b", "c"];
        for _ in 0..20_000 {
            let depth = rng.gen_range(1..6);
            let branches: Vec<Vec<(String, FileType)>> = (0..depth)
                .map(|_| {
                    let mut l = Vec::new();
                    for n in names {
                        match rng.gen_range(0..5) {
                            0 => l.push((n.to_string(), F)),
                            1 | 2 => l.push((n.to_string(), D)),
                            _ => {}
                        }
                        if rng.gen_range(0..4) == 0 {
                            l.push((format!(".wh.{n}"), F));
                        }
                    }
                    if rng.gen_range(0..8) == 0 {
                        l.push((OPAQUE.to_string(), F));
                    }
                    l
                })
                .collect();
            let borrowed = branches
                .iter()
                .map(|l| l.iter().map(|(n, k)| (n.as_str(), *k)).collect())
                .collect();
            let no_wh: Vec<u16> = (0..depth).filter(|_| rng.gen_range(0..3) == 0).collect();
            let v = build_with(borrowed, &no_wh);
            for n in names {
                let p = probe(
                    &v.dirs,
                    |b| !no_wh.contains(&b),
                    OsStr::new(n),
                    |b, name| {
                        Ok(branches[b as usize]
                            .iter()
                            .position(|(m, _)| OsStr::new(m) == name)
                            .map(|i| (branches[b as usize][i].1, i as u64 + 10)))
                    },
                )
                .unwrap();
                let want = v.entries.get(OsStr::new(n));
                let got = p
                    .as_ref()
                    .map(|e| (e.branch, e.kind, e.ino, &e.dirs, e.shadows));
                let want = want.map(|e| (e.branch, e.kind, e.ino, &e.dirs, e.shadows));
                assert_eq!(got, want, "{n} in {branches:?}");
            }
        }
    }
}
