//! Copy-on-write B-trees over metadata blocks, in persistent-data's node format, and the
//! transaction manager they live in: reference counts for metadata and data blocks, and
//! shadowing. A node written by an earlier transaction is never modified: changing it
//! copies it to a fresh block first (a shadow), and a node shared by several trees (after a
//! snapshot) hands a reference to each of its children to the copy. Nodes made in the
//! current transaction are changed in place while only one tree refers to them.
//!
//! Written by hand: the on-disk format is dm-thin's (so `thin_check` can judge it), and no
//! crate implements persistent-data's btrees.

use crate::block::{self, Kind, BLOCK_SIZE};
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::fs::File;

const HEADER: usize = 32;
const INTERNAL: u32 = 1;
const LEAF: u32 = 2;
/// Clean nodes kept decoded; the cache is dropped whole when it outgrows this.
const CACHE_NODES: usize = 16384;

/// Makes a leaf's new value from its old one (none for a new key).
pub type Update<'a> = dyn FnMut(&mut Tm, Option<&[u8]>) -> Result<Vec<u8>> + 'a;

/// What a tree's leaf values are, which decides what a shared leaf's copy references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// A mapping: data block << 24 | time. Referenced in the data space map.
    Data,
    /// The root of another tree of [`Values::Data`] (a device's mappings).
    Subtree,
    /// Plain bytes of this size.
    Plain(usize),
}

impl Values {
    pub fn size(self) -> usize {
        match self {
            Values::Data | Values::Subtree => 8,
            Values::Plain(n) => n,
        }
    }
}

/// As many entries as fit, rounded down to a multiple of 3 (the kernel's rule; thin_check
/// checks it).
pub fn max_entries(value_size: usize) -> usize {
    (BLOCK_SIZE - HEADER) / (8 + value_size) / 3 * 3
}

#[derive(Debug, Clone)]
pub struct Node {
    pub internal: bool,
    pub keys: Vec<u64>,
    /// `keys.len()` values of `vs` bytes each (child block numbers in an internal node).
    pub values: Vec<u8>,
    pub vs: usize,
}

impl Node {
    pub fn new_leaf(vs: usize) -> Node {
        Node {
            internal: false,
            keys: Vec::new(),
            values: Vec::new(),
            vs,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i * self.vs..(i + 1) * self.vs]
    }

    pub fn value_u64(&self, i: usize) -> u64 {
        block::u64_at(self.value(i), 0)
    }

    fn set_value(&mut self, i: usize, v: &[u8]) {
        self.values[i * self.vs..(i + 1) * self.vs].copy_from_slice(v);
    }

    fn insert_at(&mut self, i: usize, key: u64, v: &[u8]) {
        self.keys.insert(i, key);
        let at = i * self.vs;
        self.values.splice(at..at, v.iter().copied());
    }

    fn remove_at(&mut self, i: usize) -> Vec<u8> {
        self.keys.remove(i);
        let at = i * self.vs;
        self.values.drain(at..at + self.vs).collect()
    }

    fn max(&self) -> usize {
        max_entries(self.vs)
    }

    /// Index of the last key <= `key` (internal nodes: the child to descend into).
    fn child_index(&self, key: u64) -> usize {
        self.keys.partition_point(|k| *k <= key).saturating_sub(1)
    }

    /// Splits off the upper half into a new node.
    fn split(&mut self) -> Node {
        let mid = self.len() / 2;
        Node {
            internal: self.internal,
            keys: self.keys.split_off(mid),
            values: self.values.split_off(mid * self.vs),
            vs: self.vs,
        }
    }

    pub fn encode(&self) -> Box<block::Block> {
        let mut b = Box::new([0u8; BLOCK_SIZE]);
        let max = self.max();
        assert!(self.len() <= max, "node overfull");
        block::put_u32(&mut b[..], 4, if self.internal { INTERNAL } else { LEAF });
        block::put_u32(&mut b[..], 16, self.len() as u32);
        block::put_u32(&mut b[..], 20, max as u32);
        block::put_u32(&mut b[..], 24, self.vs as u32);
        for (i, k) in self.keys.iter().enumerate() {
            block::put_u64(&mut b[..], HEADER + 8 * i, *k);
        }
        let vbase = HEADER + 8 * max;
        b[vbase..vbase + self.values.len()].copy_from_slice(&self.values);
        b
    }

    pub fn decode(b: &block::Block, nr: u64) -> Result<Node> {
        let flags = block::u32_at(&b[..], 4);
        let n = block::u32_at(&b[..], 16) as usize;
        let max = block::u32_at(&b[..], 20) as usize;
        let vs = block::u32_at(&b[..], 24) as usize;
        if vs == 0 || max != max_entries(vs) || n > max || !(flags == INTERNAL || flags == LEAF) {
            return Err(Error::Corrupt(format!(
                "metadata block {nr} is not a btree node (flags {flags}, {n}/{max} entries of {vs} bytes)"
            )));
        }
        let keys = (0..n)
            .map(|i| block::u64_at(&b[..], HEADER + 8 * i))
            .collect();
        let vbase = HEADER + 8 * max;
        Ok(Node {
            internal: flags == INTERNAL,
            keys,
            values: b[vbase..vbase + n * vs].to_vec(),
            vs,
        })
    }
}

/// Reference counts of a set of blocks, with the blocks the last commit references kept
/// out of allocation until the next commit (a crash must find them as they were).
#[derive(Debug, Clone)]
pub struct Counts {
    pub rc: Vec<u32>,
    /// Referenced by the committed state: not to be reused before the next commit.
    pub committed: Vec<bool>,
    /// Blocks with no reference, and those of them [`Counts::alloc`] can hand out now
    /// (kept as counts: allocation must not scan the whole map).
    free: u64,
    available: u64,
    hint: usize,
    /// Per bitmap block of the space map: a count in it changed since the last commit.
    pub dirty: Vec<bool>,
    /// Blocks counted above 2 (the overflow tree's entries), kept as counts change so a
    /// commit need not scan the map for them.
    pub overflow: std::collections::BTreeSet<u64>,
    /// Blocks whose count changed since the last commit (with repeats): a commit updates
    /// `committed` for these only, not for the whole map.
    touched: Vec<u64>,
}

impl Counts {
    pub fn new(rc: Vec<u32>) -> Counts {
        let committed = rc.iter().map(|c| *c > 0).collect();
        let free = rc.iter().filter(|c| **c == 0).count() as u64;
        let dirty = vec![false; crate::sm::bitmaps(rc.len() as u64)];
        let overflow = (0..rc.len() as u64)
            .filter(|b| rc[*b as usize] > 2)
            .collect();
        Counts {
            overflow,
            rc,
            committed,
            free,
            available: free,
            hint: 0,
            dirty,
            touched: Vec::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.rc.len() as u64
    }

    /// Makes room for `len` blocks; the new ones are free (and their bitmaps unwritten).
    pub fn grow(&mut self, len: u64) {
        let added = len.saturating_sub(self.len());
        self.rc.resize(len as usize, 0);
        self.committed.resize(len as usize, false);
        // The last bitmap so far now covers more blocks: its free count changes too.
        if let Some(last) = self.dirty.last_mut() {
            *last = true;
        }
        self.dirty.resize(crate::sm::bitmaps(len), true);
        self.free += added;
        self.available += added;
    }

    /// Blocks that are free now (some may wait for the next commit to be reusable).
    pub fn free(&self) -> u64 {
        self.free
    }

    pub fn available(&self) -> u64 {
        self.available
    }

    pub fn alloc(&mut self) -> Option<u64> {
        if self.available == 0 {
            return None;
        }
        let n = self.rc.len();
        for i in 0..n {
            let b = (self.hint + i) % n;
            if self.rc[b] == 0 && !self.committed[b] {
                self.rc[b] = 1;
                self.free -= 1;
                self.available -= 1;
                self.dirty[b / crate::sm::ENTRIES_PER_BITMAP] = true;
                self.touched.push(b as u64);
                self.hint = b + 1;
                return Some(b as u64);
            }
        }
        None
    }

    pub fn inc(&mut self, b: u64) {
        self.rc[b as usize] += 1;
        if self.rc[b as usize] == 3 {
            self.overflow.insert(b);
        }
        self.dirty[b as usize / crate::sm::ENTRIES_PER_BITMAP] = true;
        self.touched.push(b);
    }

    /// Drops one reference; true when none is left.
    pub fn dec(&mut self, b: u64) -> bool {
        let c = &mut self.rc[b as usize];
        assert!(*c > 0, "reference count of block {b} would go below zero");
        *c -= 1;
        if *c == 2 {
            self.overflow.remove(&b);
        }
        self.dirty[b as usize / crate::sm::ENTRIES_PER_BITMAP] = true;
        self.touched.push(b);
        if *c == 0 {
            self.free += 1;
            if !self.committed[b as usize] {
                self.available += 1;
            }
        }
        *c == 0
    }

    /// After a commit: what is referenced now is what a crash would find. With `rewind`,
    /// allocation starts again from the lowest free block, so blocks freed by the
    /// transaction are reused before new ones: for metadata, that keeps rewrites inside
    /// the file's written part, where a sync has no new extents to journal.
    pub fn committed_now(&mut self, rewind: bool) {
        for b in std::mem::take(&mut self.touched) {
            let b = b as usize;
            self.committed[b] = self.rc[b] > 0;
            if rewind && self.rc[b] == 0 {
                self.hint = self.hint.min(b);
            }
        }
        self.available = self.free;
    }
}

/// The transaction manager: metadata file, node cache, both space maps' counts.
pub struct Tm {
    pub file: File,
    pub meta: Counts,
    pub data: Counts,
    /// Nodes made in this transaction, not yet written.
    dirty: HashMap<u64, Node>,
    fresh: HashSet<u64>,
    cache: HashMap<u64, Node>,
    /// Data blocks released in this transaction (their space is given back after commit).
    freed_data: Vec<u64>,
}

impl Tm {
    pub fn new(file: File, meta: Counts, data: Counts) -> Tm {
        Tm {
            file,
            meta,
            data,
            dirty: HashMap::new(),
            fresh: HashSet::new(),
            cache: HashMap::new(),
            freed_data: Vec::new(),
        }
    }

    pub fn take_freed_data(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.freed_data)
    }

    pub fn alloc_meta(&mut self) -> Result<u64> {
        let b = self.meta.alloc().ok_or(Error::MetadataFull)?;
        self.fresh.insert(b);
        Ok(b)
    }

    pub fn node(&mut self, b: u64) -> Result<Node> {
        if let Some(n) = self.dirty.get(&b).or_else(|| self.cache.get(&b)) {
            return Ok(n.clone());
        }
        let raw = block::read(&self.file, b, Kind::Node)?;
        let n = Node::decode(&raw, b)?;
        if self.cache.len() >= CACHE_NODES {
            self.cache.clear();
        }
        self.cache.insert(b, n.clone());
        Ok(n)
    }

    fn put(&mut self, b: u64, n: Node) {
        self.dirty.insert(b, n);
    }

    /// A new empty leaf for a tree of `values`.
    pub fn empty_tree(&mut self, values: Values) -> Result<u64> {
        let b = self.alloc_meta()?;
        self.put(b, Node::new_leaf(values.size()));
        Ok(b)
    }

    /// Writes the nodes made in this transaction.
    pub fn flush(&mut self) -> Result<()> {
        let mut dirty: Vec<(u64, Node)> = self.dirty.drain().collect();
        dirty.sort_by_key(|(b, _)| *b);
        for (b, n) in dirty {
            let mut raw = n.encode();
            block::write(&self.file, b, &mut raw, Kind::Node)?;
            self.cache.insert(b, n);
        }
        self.fresh.clear();
        Ok(())
    }

    fn inc_value(&mut self, values: Values, v: &[u8]) {
        match values {
            Values::Data => self.data.inc(block::u64_at(v, 0) >> 24),
            Values::Subtree => self.meta.inc(block::u64_at(v, 0)),
            Values::Plain(_) => {}
        }
    }

    fn dec_value(&mut self, values: Values, v: &[u8]) -> Result<()> {
        match values {
            Values::Data => {
                let db = block::u64_at(v, 0) >> 24;
                if self.data.dec(db) {
                    self.freed_data.push(db);
                }
            }
            Values::Subtree => self.dec_tree(block::u64_at(v, 0), Values::Data)?,
            Values::Plain(_) => {}
        }
        Ok(())
    }

    fn forget(&mut self, b: u64) {
        self.dirty.remove(&b);
        self.cache.remove(&b);
        self.fresh.remove(&b);
    }

    /// Drops a reference to tree `root`; what is no longer referenced is released, down to
    /// the data blocks.
    pub fn dec_tree(&mut self, root: u64, values: Values) -> Result<()> {
        if !self.meta.dec(root) {
            return Ok(());
        }
        let n = self.node(root)?;
        self.forget(root);
        for i in 0..n.len() {
            if n.internal {
                self.dec_tree(n.value_u64(i), values)?;
            } else {
                self.dec_value(values, n.value(i))?;
            }
        }
        Ok(())
    }

    /// A node of this transaction to change in place of `b`: `b` itself when only this
    /// tree refers to it and it is new, a copy otherwise.
    fn shadow(&mut self, b: u64, values: Values) -> Result<(u64, Node)> {
        let n = self.node(b)?;
        let rc = self.meta.rc[b as usize];
        if rc == 1 && self.fresh.contains(&b) {
            return Ok((b, n));
        }
        let nb = self.alloc_meta()?;
        if rc > 1 {
            // Both the original and the copy now refer to everything below.
            for i in 0..n.len() {
                if n.internal {
                    self.meta.inc(n.value_u64(i));
                } else {
                    self.inc_value(values, n.value(i));
                }
            }
        }
        if self.meta.dec(b) {
            self.forget(b);
        }
        Ok((nb, n))
    }

    /// The leaf where `key` belongs (None when it is below every key of the tree) and
    /// whether a node on the way has another referrer.
    fn leaf_for(&mut self, root: u64, key: u64) -> Result<Option<(Node, bool)>> {
        let mut b = root;
        let mut shared = false;
        loop {
            shared |= self.meta.rc[b as usize] > 1;
            let n = self.node(b)?;
            if !n.internal {
                return Ok(Some((n, shared)));
            }
            if n.keys.first().is_none_or(|k| key < *k) {
                return Ok(None);
            }
            b = n.value_u64(n.child_index(key));
        }
    }

    /// The data block `key` maps to, and the mapping's time, when nothing on the way is
    /// shared now: no node of the path has another referrer and no other mapping refers to
    /// the data block.
    pub fn exclusive_mapping(&mut self, root: u64, key: u64) -> Result<Option<(u64, u32)>> {
        let Some((n, false)) = self.leaf_for(root, key)? else {
            return Ok(None);
        };
        let Ok(i) = n.keys.binary_search(&key) else {
            return Ok(None);
        };
        let v = n.value_u64(i);
        let db = v >> 24;
        Ok((self.data.rc[db as usize] == 1).then_some((db, (v & 0xff_ffff) as u32)))
    }

    pub fn lookup(&mut self, root: u64, key: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .leaf_for(root, key)?
            .and_then(|(n, _)| n.keys.binary_search(&key).ok().map(|i| n.value(i).to_vec())))
    }

    /// Sets `key` in tree `root` to what `f` makes of its old value; returns the new root.
    /// With `release_old`, a replaced value's references are dropped (a plain insert);
    /// without it `f` has taken care of them (it updated a subtree in place).
    pub fn upsert(
        &mut self,
        root: u64,
        key: u64,
        values: Values,
        release_old: bool,
        f: &mut Update,
    ) -> Result<u64> {
        let (nb, split) = self.upsert_in(root, key, values, release_old, f)?;
        match split {
            None => Ok(nb),
            Some((sep, right)) => {
                let left_min = self.node(nb)?.keys[0];
                let r = self.alloc_meta()?;
                let mut top = Node {
                    internal: true,
                    keys: Vec::new(),
                    values: Vec::new(),
                    vs: 8,
                };
                top.insert_at(0, left_min, &nb.to_le_bytes());
                top.insert_at(1, sep, &right.to_le_bytes());
                self.put(r, top);
                Ok(r)
            }
        }
    }

    fn upsert_in(
        &mut self,
        b: u64,
        key: u64,
        values: Values,
        release_old: bool,
        f: &mut Update,
    ) -> Result<(u64, Option<(u64, u64)>)> {
        let (nb, mut n) = self.shadow(b, values)?;
        if n.internal {
            let i = n.child_index(key);
            if key < n.keys[0] {
                n.keys[0] = key;
            }
            let (child, split) = self.upsert_in(n.value_u64(i), key, values, release_old, f)?;
            n.set_value(i, &child.to_le_bytes());
            if let Some((sep, right)) = split {
                n.insert_at(i + 1, sep, &right.to_le_bytes());
            }
        } else {
            match n.keys.binary_search(&key) {
                Ok(i) => {
                    let old = n.value(i).to_vec();
                    let v = f(self, Some(&old))?;
                    if release_old && v != old {
                        self.dec_value(values, &old)?;
                    }
                    n.set_value(i, &v);
                }
                Err(i) => {
                    let v = f(self, None)?;
                    n.insert_at(i, key, &v);
                }
            }
        }
        let split = if n.len() > n.max() {
            let right = n.split();
            let rb = self.alloc_meta()?;
            let sep = right.keys[0];
            self.put(rb, right);
            Some((sep, rb))
        } else {
            None
        };
        self.put(nb, n);
        Ok((nb, split))
    }

    /// Inserts `key` -> `value`. The caller's reference to what the value refers to (a
    /// data block it allocated, a subtree root it holds) passes to the tree; a value it
    /// replaces is released.
    pub fn insert(&mut self, root: u64, key: u64, values: Values, value: &[u8]) -> Result<u64> {
        let v = value.to_vec();
        self.upsert(root, key, values, true, &mut |_, _| Ok(v.clone()))
    }

    /// Removes `key`, dropping the tree's reference to its value; returns the new root and
    /// whether the key was there.
    pub fn remove(&mut self, root: u64, key: u64, values: Values) -> Result<(u64, bool)> {
        if self.lookup(root, key)?.is_none() {
            return Ok((root, false));
        }
        let nb = self.remove_in(root, key, values)?;
        let n = self.node(nb)?;
        if n.internal && n.len() == 1 {
            // A root with one child gives way to it.
            let child = n.value_u64(0);
            if self.meta.dec(nb) {
                self.forget(nb);
            }
            return Ok((child, true));
        }
        Ok((nb, true))
    }

    fn remove_in(&mut self, b: u64, key: u64, values: Values) -> Result<u64> {
        let (nb, mut n) = self.shadow(b, values)?;
        if n.internal {
            let i = n.child_index(key);
            let child = self.remove_in(n.value_u64(i), key, values)?;
            n.set_value(i, &child.to_le_bytes());
            let c = self.node(child)?;
            if let Some(first) = c.keys.first() {
                n.keys[i] = *first;
            }
            if c.len() < c.max() / 3 {
                self.rebalance(&mut n, i, values)?;
            }
        } else {
            let i = n.keys.binary_search(&key).expect("key present");
            let old = n.remove_at(i);
            self.dec_value(values, &old)?;
        }
        self.put(nb, n);
        Ok(nb)
    }

    /// Child `i` of `parent` has too few entries: merge it with a sibling, or even the two
    /// out when together they would not fit in one node.
    fn rebalance(&mut self, parent: &mut Node, i: usize, values: Values) -> Result<()> {
        if parent.len() < 2 {
            return Ok(());
        }
        let (l, r) = if i + 1 < parent.len() {
            (i, i + 1)
        } else {
            (i - 1, i)
        };
        let (lb, mut ln) = self.shadow(parent.value_u64(l), values)?;
        let (rb, mut rn) = self.shadow(parent.value_u64(r), values)?;
        if ln.len() + rn.len() <= ln.max() {
            ln.keys.append(&mut rn.keys);
            ln.values.append(&mut rn.values);
            // Everything below moved to the left node: the right one goes unreferenced.
            if self.meta.dec(rb) {
                self.forget(rb);
            }
            parent.remove_at(r);
            parent.set_value(l, &lb.to_le_bytes());
            parent.keys[l] = ln.keys[0];
            self.put(lb, ln);
        } else {
            let total = ln.len() + rn.len();
            let want_left = total / 2;
            while ln.len() > want_left {
                let k = ln.keys.pop().expect("entry");
                let at = ln.values.len() - ln.vs;
                let v: Vec<u8> = ln.values.drain(at..).collect();
                rn.insert_at(0, k, &v);
            }
            while ln.len() < want_left {
                let k = rn.keys[0];
                let v = rn.remove_at(0);
                ln.insert_at(ln.len(), k, &v);
            }
            parent.set_value(l, &lb.to_le_bytes());
            parent.set_value(r, &rb.to_le_bytes());
            parent.keys[l] = ln.keys[0];
            parent.keys[r] = rn.keys[0];
            self.put(lb, ln);
            self.put(rb, rn);
        }
        Ok(())
    }

    /// Leaf values of tree `root` reachable only through nodes nothing else refers to
    /// (`shared` says whether a node above is shared), passed to `f`.
    pub fn each_exclusive(
        &mut self,
        root: u64,
        shared: bool,
        f: &mut dyn FnMut(&Tm, &[u8]),
    ) -> Result<()> {
        let shared = shared || self.meta.rc[root as usize] > 1;
        if shared {
            return Ok(());
        }
        let n = self.node(root)?;
        for i in 0..n.len() {
            if n.internal {
                self.each_exclusive(n.value_u64(i), shared, f)?;
            } else {
                f(self, n.value(i));
            }
        }
        Ok(())
    }

    /// Every (key, value) of a tree, in key order.
    pub fn walk(&mut self, root: u64, out: &mut Vec<(u64, Vec<u8>)>) -> Result<()> {
        let n = self.node(root)?;
        for i in 0..n.len() {
            if n.internal {
                self.walk(n.value_u64(i), out)?;
            } else {
                out.push((n.keys[i], n.value(i).to_vec()));
            }
        }
        Ok(())
    }
}

/// Nodes a tree of `n` entries built by [`build`] takes.
pub fn built_nodes(n: usize, vs: usize) -> usize {
    let mut total = 0;
    let mut level = n.max(1);
    let mut max = max_entries(vs);
    loop {
        let nodes = level.div_ceil(max).max(1);
        total += nodes;
        if nodes == 1 {
            return total;
        }
        level = nodes;
        max = max_entries(8);
    }
}

/// Writes a tree holding `entries` (sorted by key) into the given blocks, nodes filled
/// evenly; returns its root.
pub fn build(
    file: &File,
    entries: &[(u64, Vec<u8>)],
    vs: usize,
    blocks: &mut dyn Iterator<Item = u64>,
) -> Result<u64> {
    let mut level: Vec<(u64, Node)> = chunk_evenly(entries.len(), max_entries(vs))
        .into_iter()
        .map(|(a, b)| {
            let mut n = Node::new_leaf(vs);
            for (k, v) in &entries[a..b] {
                n.insert_at(n.len(), *k, v);
            }
            (blocks.next().expect("preallocated block"), n)
        })
        .collect();
    loop {
        for (b, n) in &level {
            let mut raw = n.encode();
            block::write(file, *b, &mut raw, Kind::Node)?;
        }
        if level.len() == 1 {
            return Ok(level[0].0);
        }
        let refs: Vec<(u64, u64)> = level
            .iter()
            .map(|(b, n)| (n.keys.first().copied().unwrap_or(0), *b))
            .collect();
        level = chunk_evenly(refs.len(), max_entries(8))
            .into_iter()
            .map(|(a, b)| {
                let mut n = Node {
                    internal: true,
                    keys: Vec::new(),
                    values: Vec::new(),
                    vs: 8,
                };
                for (k, child) in &refs[a..b] {
                    n.insert_at(n.len(), *k, &child.to_le_bytes());
                }
                (blocks.next().expect("preallocated block"), n)
            })
            .collect();
    }
}

/// Splits `n` items into ranges of at most `max`, as even as can be (one empty range for
/// none).
fn chunk_evenly(n: usize, max: usize) -> Vec<(usize, usize)> {
    let parts = n.div_ceil(max).max(1);
    (0..parts)
        .map(|p| (n * p / parts, n * (p + 1) / parts))
        .collect()
}
