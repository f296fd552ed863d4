//! bbolt's file format (the database etcd keeps its state in and writes its
//! snapshots as): a streaming writer and a reader, written from the format's
//! description, not from bbolt's code.
//!
//! The file is an array of pages (4096 bytes here; the reader takes the size
//! from the meta page). Every page starts with a 16-byte header: page id
//! (u64), flags (u16: branch 0x01, leaf 0x02, meta 0x04, freelist 0x10),
//! element count (u16) and overflow (u32: how many more pages the page runs
//! over). All integers are little-endian.
//!
//! - Pages 0 and 1 are meta pages: magic `0xED0CDAED`, version 2, page
//!   size, flags, the root bucket (root page id, sequence), the freelist
//!   page id, the high-water page id (pages in use), the transaction id and
//!   an FNV-1a 64 checksum of the 56 bytes before it. A reader takes the
//!   valid meta with the highest transaction id.
//! - Leaf pages hold sorted elements of 16 bytes (flags u32, pos u32, key
//!   size u32, value size u32; `pos` counts from the element to its key,
//!   the value follows the key); flag 0x01 marks a bucket, whose value is a
//!   16-byte bucket header (root page id, sequence) — root 0 means the
//!   bucket's one leaf page follows inline in the value.
//! - Branch pages hold sorted elements (pos u32, key size u32, child page id
//!   u64), each key the first key of its child.
//! - The freelist page lists free page ids (a count of 0xFFFF means the real
//!   count is the first u64).
//!
//! `Writer` produces a whole database page by page from sorted record
//! sources with memory bounded by the tree height (`plan` runs the same
//! builder without producing bytes, to learn where the roots land — the
//! meta pages come first in the file). Layout: metas, an empty freelist at
//! page 2, the root bucket's leaf at page 3, then each bucket's tree in
//! post-order (a branch page right after its last child). `Db` reads any
//! bbolt file, including etcd's (inline buckets, overflow pages, freelists).
//!
//! Tests: `tests` below (round trips, inline buckets, overflow, corruption
//! caught); `tests/snapshot.rs` (etcd 3.4 reads what this writes and the
//! other way round).

use std::collections::VecDeque;

pub const PAGE_SIZE: usize = 4096;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const HEADER: usize = 16;
const ELEMENT: usize = 16;
const META_SIZE: usize = 64;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const FREELIST_PAGE: u16 = 0x10;
const BUCKET_FLAG: u32 = 0x01;
/// No freelist stored (bbolt's `NoFreelistSync`).
const NO_FREELIST: u64 = u64::MAX;
/// The page holding the root bucket's entries in files this module writes.
const ROOT_LEAF: u64 = 3;
const FIRST_BUCKET_PAGE: u64 = 4;

/// Everything that can be wrong with a bbolt file or its sources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoltError {
    #[error("{0}")]
    Invalid(String),
    #[error("i/o error: {0}")]
    Io(String),
    #[error("{0}")]
    Source(String),
}

fn invalid(msg: impl Into<String>) -> BoltError {
    BoltError::Invalid(msg.into())
}

/// Called with each key, value and element flags of a page.
type ElementFn<'a> = dyn FnMut(&[u8], &[u8], u32) -> Result<(), BoltError> + 'a;
/// Called with each key and value of a bucket.
pub type RecordFn<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), BoltError> + 'a;

/// One key/value record.
pub type Record = (Vec<u8>, Vec<u8>);

/// A bucket's records in strictly increasing key order, one at a time.
pub trait RecordSource: Send {
    fn next_record(&mut self) -> Result<Option<Record>, BoltError>;
}

/// A source from records already in memory (sorted here).
pub struct VecSource(std::vec::IntoIter<Record>);

impl VecSource {
    pub fn new(mut records: Vec<Record>) -> VecSource {
        records.sort_by(|a, b| a.0.cmp(&b.0));
        records.dedup_by(|a, b| a.0 == b.0);
        VecSource(records.into_iter())
    }
}

impl RecordSource for VecSource {
    fn next_record(&mut self) -> Result<Option<Record>, BoltError> {
        Ok(self.0.next())
    }
}

/// A top-level bucket and where its records come from.
pub struct BucketSource {
    pub name: Vec<u8>,
    pub records: Box<dyn RecordSource>,
}

/// FNV-1a, 64 bits: the meta page's checksum.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn pages_for(bytes: usize) -> u64 {
    bytes.div_ceil(PAGE_SIZE).max(1) as u64
}

fn put_u16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8], at: usize) -> Result<u16, BoltError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| invalid("truncated page"))
}
fn get_u32(b: &[u8], at: usize) -> Result<u32, BoltError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| invalid("truncated page"))
}
fn get_u64(b: &[u8], at: usize) -> Result<u64, BoltError> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| invalid("truncated page"))
}

fn page_header(out: &mut [u8], id: u64, flags: u16, count: usize, overflow: u64) {
    put_u64(out, 0, id);
    put_u16(out, 8, flags);
    put_u16(out, 10, count as u16);
    put_u32(out, 12, overflow as u32);
}

/// Bytes of a leaf page's elements and data (header included).
fn leaf_bytes(entries: &[(Vec<u8>, Vec<u8>, u32)]) -> usize {
    HEADER
        + entries
            .iter()
            .map(|(k, v, _)| ELEMENT + k.len() + v.len())
            .sum::<usize>()
}

/// A leaf page (with its overflow pages) holding `entries` (key, value, flags).
fn leaf_page(id: u64, entries: &[(Vec<u8>, Vec<u8>, u32)]) -> Vec<u8> {
    let size = leaf_bytes(entries);
    let pages = pages_for(size);
    let mut out = vec![0u8; pages as usize * PAGE_SIZE];
    page_header(&mut out, id, LEAF_PAGE, entries.len(), pages - 1);
    let mut data = HEADER + ELEMENT * entries.len();
    for (i, (k, v, flags)) in entries.iter().enumerate() {
        let elem = HEADER + ELEMENT * i;
        put_u32(&mut out, elem, *flags);
        put_u32(&mut out, elem + 4, (data - elem) as u32);
        put_u32(&mut out, elem + 8, k.len() as u32);
        put_u32(&mut out, elem + 12, v.len() as u32);
        out[data..data + k.len()].copy_from_slice(k);
        data += k.len();
        out[data..data + v.len()].copy_from_slice(v);
        data += v.len();
    }
    out
}

fn branch_page(id: u64, entries: &[(Vec<u8>, u64)]) -> Vec<u8> {
    let size = HEADER
        + entries
            .iter()
            .map(|(k, _)| ELEMENT + k.len())
            .sum::<usize>();
    let pages = pages_for(size);
    let mut out = vec![0u8; pages as usize * PAGE_SIZE];
    page_header(&mut out, id, BRANCH_PAGE, entries.len(), pages - 1);
    let mut data = HEADER + ELEMENT * entries.len();
    for (i, (k, child)) in entries.iter().enumerate() {
        let elem = HEADER + ELEMENT * i;
        put_u32(&mut out, elem, (data - elem) as u32);
        put_u32(&mut out, elem + 4, k.len() as u32);
        put_u64(&mut out, elem + 8, *child);
        out[data..data + k.len()].copy_from_slice(k);
        data += k.len();
    }
    out
}

fn meta_page(id: u64, txid: u64, root: u64, high_water: u64) -> Vec<u8> {
    let mut out = vec![0u8; PAGE_SIZE];
    page_header(&mut out, id, META_PAGE, 0, 0);
    let m = HEADER;
    put_u32(&mut out, m, MAGIC);
    put_u32(&mut out, m + 4, VERSION);
    put_u32(&mut out, m + 8, PAGE_SIZE as u32);
    put_u32(&mut out, m + 12, 0);
    put_u64(&mut out, m + 16, root);
    put_u64(&mut out, m + 24, 0);
    put_u64(&mut out, m + 32, 2);
    put_u64(&mut out, m + 40, high_water);
    put_u64(&mut out, m + 48, txid);
    let sum = fnv1a64(&out[m..m + 56]);
    put_u64(&mut out, m + 56, sum);
    out
}

/// Builds one bucket's B+tree bottom-up as its sorted records arrive,
/// giving each page the next id and emitting it (when `emit`) as soon as it
/// is complete: leaves in order, each branch page right after its last child.
struct TreeBuilder {
    next_page: u64,
    emit: bool,
    out: VecDeque<Vec<u8>>,
    leaf: Vec<(Vec<u8>, Vec<u8>, u32)>,
    leaf_size: usize,
    leaves: u64,
    /// Per branch level: its pending children (first key, page id), their
    /// size, and how many pages the level has closed.
    levels: Vec<BranchLevel>,
    last_key: Option<Vec<u8>>,
}

#[derive(Default)]
struct BranchLevel {
    children: Vec<(Vec<u8>, u64)>,
    size: usize,
    closed: u64,
}

impl TreeBuilder {
    fn new(first_page: u64, emit: bool) -> TreeBuilder {
        TreeBuilder {
            next_page: first_page,
            emit,
            out: VecDeque::new(),
            leaf: Vec::new(),
            leaf_size: HEADER,
            leaves: 0,
            levels: Vec::new(),
            last_key: None,
        }
    }

    fn add(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), BoltError> {
        if let Some(last) = &self.last_key {
            if key <= *last {
                return Err(BoltError::Source(format!(
                    "records out of order: {key:?} after {last:?}"
                )));
            }
        }
        if key.is_empty() {
            return Err(BoltError::Source("empty key".into()));
        }
        self.last_key = Some(key.clone());
        let size = ELEMENT + key.len() + value.len();
        if !self.leaf.is_empty() && self.leaf_size + size > PAGE_SIZE {
            self.close_leaf();
        }
        self.leaf_size += size;
        self.leaf.push((key, value, 0));
        Ok(())
    }

    fn close_leaf(&mut self) {
        let entries = std::mem::take(&mut self.leaf);
        let size = std::mem::replace(&mut self.leaf_size, HEADER);
        let id = self.next_page;
        self.next_page += pages_for(size);
        self.leaves += 1;
        let first = entries.first().map(|e| e.0.clone()).unwrap_or_default();
        if self.emit {
            self.out.push_back(leaf_page(id, &entries));
        }
        self.add_child(0, first, id);
    }

    fn add_child(&mut self, level: usize, key: Vec<u8>, page: u64) {
        if self.levels.len() <= level {
            self.levels.push(BranchLevel::default());
        }
        let size = ELEMENT + key.len();
        let l = &self.levels[level];
        if l.children.len() >= 2 && HEADER + l.size + size > PAGE_SIZE {
            self.close_branch(level);
        }
        let l = &mut self.levels[level];
        l.size += size;
        l.children.push((key, page));
    }

    fn close_branch(&mut self, level: usize) {
        let l = &mut self.levels[level];
        let children = std::mem::take(&mut l.children);
        let size = HEADER + std::mem::take(&mut l.size);
        l.closed += 1;
        let id = self.next_page;
        self.next_page += pages_for(size);
        let first = children[0].0.clone();
        if self.emit {
            self.out.push_back(branch_page(id, &children));
        }
        self.add_child(level + 1, first, id);
    }

    /// Closes every open page; returns the root page id.
    fn finish(&mut self) -> u64 {
        if !self.leaf.is_empty() || self.leaves == 0 {
            self.close_leaf();
        }
        let mut level = 0;
        loop {
            let l = &self.levels[level];
            if l.closed == 0 && l.children.len() == 1 {
                return l.children[0].1;
            }
            self.close_branch(level);
            level += 1;
        }
    }
}

/// Where each bucket's tree ends up, and the file's size in pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub roots: Vec<(Vec<u8>, u64)>,
    pub pages: u64,
}

impl Plan {
    pub fn size_bytes(&self) -> u64 {
        self.pages * PAGE_SIZE as u64
    }
}

/// Runs the builders over `buckets` without producing pages.
pub fn plan(buckets: Vec<BucketSource>) -> Result<Plan, BoltError> {
    let mut next = FIRST_BUCKET_PAGE;
    let mut roots = Vec::new();
    check_bucket_names(&buckets)?;
    for mut b in buckets {
        let mut t = TreeBuilder::new(next, false);
        while let Some((k, v)) = b.records.next_record()? {
            t.add(k, v)?;
        }
        roots.push((b.name, t.finish()));
        next = t.next_page;
    }
    let root_entries = root_leaf_entries(&roots);
    if leaf_bytes(&root_entries) > PAGE_SIZE {
        return Err(invalid("too many buckets for one root page"));
    }
    Ok(Plan { roots, pages: next })
}

fn check_bucket_names(buckets: &[BucketSource]) -> Result<(), BoltError> {
    if buckets.windows(2).any(|w| w[0].name >= w[1].name) {
        return Err(BoltError::Source(
            "buckets must be given in increasing name order".into(),
        ));
    }
    Ok(())
}

fn root_leaf_entries(roots: &[(Vec<u8>, u64)]) -> Vec<(Vec<u8>, Vec<u8>, u32)> {
    roots
        .iter()
        .map(|(name, root)| {
            let mut header = vec![0u8; 16];
            put_u64(&mut header, 0, *root);
            (name.clone(), header, BUCKET_FLAG)
        })
        .collect()
}

/// Produces the pages of a database, in file order, from the plan made over
/// the same sources (`plan`): the pages must come out where the plan said.
pub struct Writer {
    plan: Plan,
    head: VecDeque<Vec<u8>>,
    buckets: VecDeque<BucketSource>,
    current: Option<(BucketSource, TreeBuilder)>,
    next_page: u64,
    bucket_index: usize,
}

impl Writer {
    pub fn new(plan: Plan, buckets: Vec<BucketSource>) -> Result<Writer, BoltError> {
        check_bucket_names(&buckets)?;
        if buckets.len() != plan.roots.len()
            || buckets
                .iter()
                .zip(&plan.roots)
                .any(|(b, (name, _))| b.name != *name)
        {
            return Err(BoltError::Source(
                "the plan was made over other buckets".into(),
            ));
        }
        let mut freelist = vec![0u8; PAGE_SIZE];
        page_header(&mut freelist, 2, FREELIST_PAGE, 0, 0);
        let head = VecDeque::from(vec![
            meta_page(0, 0, ROOT_LEAF, plan.pages),
            meta_page(1, 1, ROOT_LEAF, plan.pages),
            freelist,
            leaf_page(ROOT_LEAF, &root_leaf_entries(&plan.roots)),
        ]);
        Ok(Writer {
            plan,
            head,
            buckets: buckets.into(),
            current: None,
            next_page: FIRST_BUCKET_PAGE,
            bucket_index: 0,
        })
    }

    /// The database's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.plan.size_bytes()
    }

    /// The next page (with its overflow pages), or `None` at the end.
    pub fn next_page(&mut self) -> Result<Option<Vec<u8>>, BoltError> {
        if let Some(p) = self.head.pop_front() {
            return Ok(Some(p));
        }
        loop {
            if let Some((_, t)) = &mut self.current {
                if let Some(p) = t.out.pop_front() {
                    return Ok(Some(p));
                }
            }
            match &mut self.current {
                None => match self.buckets.pop_front() {
                    None => {
                        if self.next_page != self.plan.pages {
                            return Err(BoltError::Source(format!(
                                "the data changed between plan and write ({} pages, planned {})",
                                self.next_page, self.plan.pages
                            )));
                        }
                        return Ok(None);
                    }
                    Some(b) => {
                        let t = TreeBuilder::new(self.next_page, true);
                        self.current = Some((b, t));
                    }
                },
                Some((b, t)) => match b.records.next_record()? {
                    Some((k, v)) => t.add(k, v)?,
                    None => {
                        let root = t.finish();
                        let planned = self.plan.roots[self.bucket_index].1;
                        if root != planned {
                            return Err(BoltError::Source(format!(
                                "the data changed between plan and write (root {root}, planned {planned})"
                            )));
                        }
                        self.next_page = t.next_page;
                        self.bucket_index += 1;
                        let pending = std::mem::take(&mut t.out);
                        self.current = None;
                        self.head = pending;
                        if let Some(p) = self.head.pop_front() {
                            return Ok(Some(p));
                        }
                    }
                },
            }
        }
    }
}

/// Random access to a database's bytes.
pub trait ReadAt: Send + Sync {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BoltError>;
    fn len(&self) -> Result<u64, BoltError>;
    fn is_empty(&self) -> Result<bool, BoltError> {
        Ok(self.len()? == 0)
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BoltError> {
        let start = usize::try_from(offset).map_err(|_| invalid("offset out of range"))?;
        let src = self
            .get(start..start + buf.len())
            .ok_or_else(|| invalid("page beyond the end of the file"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn len(&self) -> Result<u64, BoltError> {
        Ok(Vec::len(self) as u64)
    }
}

/// A file, read with positioned reads (`len` bytes of it: a snapshot file's
/// SHA-256 trailer is not part of the database).
pub struct FileReader {
    pub file: std::fs::File,
    pub len: u64,
}

impl ReadAt for FileReader {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BoltError> {
        use std::os::unix::fs::FileExt;
        if offset + buf.len() as u64 > self.len {
            return Err(invalid("page beyond the end of the file"));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| BoltError::Io(e.to_string()))
    }
    fn len(&self) -> Result<u64, BoltError> {
        Ok(self.len)
    }
}

/// The parsed meta page in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub root: u64,
    pub freelist: u64,
    pub high_water: u64,
    pub txid: u64,
}

fn parse_meta(page: &[u8]) -> Result<Meta, BoltError> {
    let m = HEADER;
    let bytes = page
        .get(m..m + META_SIZE)
        .ok_or_else(|| invalid("truncated meta page"))?;
    if get_u16(page, 8)? & META_PAGE == 0 {
        return Err(invalid("invalid meta page: not a meta page"));
    }
    if get_u32(bytes, 0)? != MAGIC {
        return Err(invalid("invalid database: bad magic"));
    }
    if get_u32(bytes, 4)? != VERSION {
        return Err(invalid("version mismatch"));
    }
    if fnv1a64(&bytes[..56]) != get_u64(bytes, 56)? {
        return Err(invalid("checksum error"));
    }
    let page_size = get_u32(bytes, 8)?;
    if !(512..=(1 << 20)).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(invalid(format!("invalid page size {page_size}")));
    }
    Ok(Meta {
        page_size,
        root: get_u64(bytes, 16)?,
        freelist: get_u64(bytes, 32)?,
        high_water: get_u64(bytes, 40)?,
        txid: get_u64(bytes, 48)?,
    })
}

/// A page as read: its header fields and bytes (overflow included).
struct Page {
    flags: u16,
    count: usize,
    bytes: Vec<u8>,
}

/// Where a bucket's tree lives: a page, or a leaf inline in its header.
enum BucketRoot {
    Page(u64),
    Inline(Vec<u8>),
}

/// A bbolt database opened for reading.
pub struct Db<R: ReadAt> {
    src: R,
    pub meta: Meta,
}

impl<R: ReadAt> Db<R> {
    pub fn open(src: R) -> Result<Db<R>, BoltError> {
        let mut first = vec![0u8; HEADER + META_SIZE];
        src.read_exact_at(0, &mut first)
            .map_err(|_| invalid("file size too small"))?;
        let m0 = parse_meta(&first);
        // The second meta page sits one page (of the size the first names)
        // further; bbolt falls back to the OS page size when page 0 is bad.
        let size1 = m0.as_ref().map_or(PAGE_SIZE as u64, |m| m.page_size as u64);
        let mut second = vec![0u8; HEADER + META_SIZE];
        let m1 = src
            .read_exact_at(size1, &mut second)
            .and_then(|_| parse_meta(&second));
        let meta = match (m0, m1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(e), Err(_)) => return Err(e),
        };
        let need = meta.high_water * meta.page_size as u64;
        if src.len()? < need {
            return Err(invalid(format!(
                "file size too small: {} bytes, the meta page says {need}",
                src.len()?
            )));
        }
        Ok(Db { src, meta })
    }

    /// Size in bytes of the database as bbolt counts it (`Tx.Size`).
    pub fn size_bytes(&self) -> u64 {
        self.meta.high_water * self.meta.page_size as u64
    }

    fn page(&self, id: u64) -> Result<Page, BoltError> {
        if id >= self.meta.high_water {
            return Err(invalid(format!(
                "page {id}: out of bounds (high water mark {})",
                self.meta.high_water
            )));
        }
        let ps = self.meta.page_size as usize;
        let mut bytes = vec![0u8; ps];
        self.src.read_exact_at(id * ps as u64, &mut bytes)?;
        let overflow = get_u32(&bytes, 12)? as u64;
        if get_u64(&bytes, 0)? != id {
            return Err(invalid(format!("page {id}: wrong page id in its header")));
        }
        if overflow > 0 {
            if id + overflow >= self.meta.high_water {
                return Err(invalid(format!(
                    "page {id}: overflow past the high water mark"
                )));
            }
            bytes.resize(ps * (overflow as usize + 1), 0);
            self.src
                .read_exact_at((id + 1) * ps as u64, &mut bytes[ps..])?;
        }
        Ok(Page {
            flags: get_u16(&bytes, 8)?,
            count: get_u16(&bytes, 10)? as usize,
            bytes,
        })
    }

    /// The top-level buckets, in name order.
    pub fn buckets(&self) -> Result<Vec<Vec<u8>>, BoltError> {
        let mut names = Vec::new();
        self.walk(BucketRoot::Page(self.meta.root), &mut |k, _, flags| {
            if flags & BUCKET_FLAG == 0 {
                return Err(invalid("a plain key in the root bucket"));
            }
            names.push(k.to_vec());
            Ok(())
        })?;
        Ok(names)
    }

    fn bucket_root(&self, name: &[u8]) -> Result<Option<BucketRoot>, BoltError> {
        let mut found = None;
        self.walk(BucketRoot::Page(self.meta.root), &mut |k, v, flags| {
            if k == name && flags & BUCKET_FLAG != 0 {
                let root = get_u64(v, 0)?;
                found = Some(if root == 0 {
                    BucketRoot::Inline(v.get(16..).unwrap_or_default().to_vec())
                } else {
                    BucketRoot::Page(root)
                });
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Calls `f` with every key and value of bucket `name` in key order;
    /// `Ok(false)` when there is no such bucket.
    pub fn for_each(&self, name: &[u8], f: &mut RecordFn<'_>) -> Result<bool, BoltError> {
        let Some(root) = self.bucket_root(name)? else {
            return Ok(false);
        };
        self.walk(root, &mut |k, v, flags| {
            if flags & BUCKET_FLAG != 0 {
                return Err(invalid(format!(
                    "nested bucket {k:?} in {}",
                    String::from_utf8_lossy(name)
                )));
            }
            f(k, v)
        })?;
        Ok(true)
    }

    /// Depth-first over the tree at `root`: `f(key, value, flags)` per leaf element.
    fn walk(&self, root: BucketRoot, f: &mut ElementFn<'_>) -> Result<(), BoltError> {
        match root {
            BucketRoot::Inline(bytes) => {
                if get_u16(&bytes, 8)? & LEAF_PAGE == 0 {
                    return Err(invalid("an inline bucket that is not a leaf"));
                }
                let count = get_u16(&bytes, 10)? as usize;
                walk_leaf(&bytes, count, f)
            }
            BucketRoot::Page(id) => self.walk_page(id, f, 0),
        }
    }

    fn walk_page(&self, id: u64, f: &mut ElementFn<'_>, depth: usize) -> Result<(), BoltError> {
        if depth > 64 {
            return Err(invalid("tree too deep (a cycle?)"));
        }
        let page = self.page(id)?;
        if page.flags & LEAF_PAGE != 0 {
            return walk_leaf(&page.bytes, page.count, f);
        }
        if page.flags & BRANCH_PAGE == 0 {
            return Err(invalid(format!(
                "page {id}: invalid page type {:#x}",
                page.flags
            )));
        }
        for (_, child) in branch_elements(&page.bytes, page.count)? {
            self.walk_page(child, f, depth + 1)?;
        }
        Ok(())
    }

    /// bbolt's consistency check (`Tx.Check`): every page below the high
    /// water mark is used exactly once, by a tree or the freelist; keys are
    /// in order. Returns the problems found (empty: consistent).
    pub fn check(&self) -> Result<Vec<String>, BoltError> {
        let mut c = Checker {
            seen: vec![false; self.meta.high_water as usize],
            problems: Vec::new(),
            last: None,
        };
        c.mark(0, 2);
        if self.meta.freelist != NO_FREELIST {
            let page = self.page(self.meta.freelist)?;
            if page.flags & FREELIST_PAGE == 0 {
                c.problems.push(format!(
                    "page {}: invalid freelist page type",
                    self.meta.freelist
                ));
            } else {
                let span = (page.bytes.len() / self.meta.page_size as usize) as u64;
                c.mark(self.meta.freelist, span);
                for id in freelist_ids(&page.bytes, page.count)? {
                    c.mark(id, 1);
                }
            }
        }
        let mut buckets = Vec::new();
        self.check_tree(
            BucketRoot::Page(self.meta.root),
            &mut c,
            &mut |k, v, flags| {
                if flags & BUCKET_FLAG == 0 {
                    return Err(invalid(format!("a plain key {k:?} in the root bucket")));
                }
                let root = get_u64(v, 0)?;
                buckets.push(if root == 0 {
                    BucketRoot::Inline(v.get(16..).unwrap_or_default().to_vec())
                } else {
                    BucketRoot::Page(root)
                });
                Ok(())
            },
        )?;
        for b in buckets {
            self.check_tree(b, &mut c, &mut |k, _, flags| {
                if flags & BUCKET_FLAG != 0 {
                    return Err(invalid(format!("nested bucket {k:?}")));
                }
                Ok(())
            })?;
        }
        // Without a stored freelist, pages no tree uses are the free ones.
        let freelist_stored = self.meta.freelist != NO_FREELIST;
        for (id, seen) in c.seen.iter().enumerate() {
            if !seen && freelist_stored {
                c.problems.push(format!("page {id}: unreachable unfreed"));
            }
        }
        Ok(c.problems)
    }

    fn check_tree(
        &self,
        root: BucketRoot,
        c: &mut Checker,
        f: &mut ElementFn<'_>,
    ) -> Result<(), BoltError> {
        c.last = None;
        match root {
            BucketRoot::Inline(bytes) => {
                let count = get_u16(&bytes, 10)? as usize;
                walk_leaf(&bytes, count, &mut |k, v, fl| {
                    c.order(k);
                    f(k, v, fl)
                })
            }
            BucketRoot::Page(id) => self.check_page(id, c, f, 0),
        }
    }

    fn check_page(
        &self,
        id: u64,
        c: &mut Checker,
        f: &mut ElementFn<'_>,
        depth: usize,
    ) -> Result<(), BoltError> {
        if id >= self.meta.high_water || depth > 64 {
            c.problems.push(format!(
                "page {id}: out of bounds: {}",
                self.meta.high_water
            ));
            return Ok(());
        }
        let page = self.page(id)?;
        c.mark(id, (page.bytes.len() / self.meta.page_size as usize) as u64);
        if page.flags & LEAF_PAGE != 0 {
            walk_leaf(&page.bytes, page.count, &mut |k, v, fl| {
                c.order(k);
                f(k, v, fl)
            })
        } else if page.flags & BRANCH_PAGE != 0 {
            for (_, child) in branch_elements(&page.bytes, page.count)? {
                self.check_page(child, c, f, depth + 1)?;
            }
            Ok(())
        } else {
            c.problems
                .push(format!("page {id}: invalid type: {:#x}", page.flags));
            Ok(())
        }
    }
}

struct Checker {
    seen: Vec<bool>,
    problems: Vec<String>,
    last: Option<Vec<u8>>,
}

impl Checker {
    fn mark(&mut self, id: u64, span: u64) {
        for p in id..id + span {
            match self.seen.get_mut(p as usize) {
                Some(s) if *s => self.problems.push(format!("page {p}: multiple references")),
                Some(s) => *s = true,
                None => self.problems.push(format!("page {p}: out of bounds")),
            }
        }
    }

    fn order(&mut self, k: &[u8]) {
        if let Some(l) = &self.last {
            if k <= l.as_slice() {
                self.problems
                    .push(format!("keys out of order: {k:?} after {l:?}"));
            }
        }
        self.last = Some(k.to_vec());
    }
}

fn walk_leaf(bytes: &[u8], count: usize, f: &mut ElementFn<'_>) -> Result<(), BoltError> {
    for i in 0..count {
        let elem = HEADER + ELEMENT * i;
        let flags = get_u32(bytes, elem)?;
        let pos = elem + get_u32(bytes, elem + 4)? as usize;
        let ksize = get_u32(bytes, elem + 8)? as usize;
        let vsize = get_u32(bytes, elem + 12)? as usize;
        let key = bytes
            .get(pos..pos + ksize)
            .ok_or_else(|| invalid("leaf element past its page"))?;
        let value = bytes
            .get(pos + ksize..pos + ksize + vsize)
            .ok_or_else(|| invalid("leaf element past its page"))?;
        f(key, value, flags)?;
    }
    Ok(())
}

fn branch_elements(bytes: &[u8], count: usize) -> Result<Vec<(Vec<u8>, u64)>, BoltError> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let elem = HEADER + ELEMENT * i;
        let pos = elem + get_u32(bytes, elem)? as usize;
        let ksize = get_u32(bytes, elem + 4)? as usize;
        let child = get_u64(bytes, elem + 8)?;
        let key = bytes
            .get(pos..pos + ksize)
            .ok_or_else(|| invalid("branch element past its page"))?;
        out.push((key.to_vec(), child));
    }
    Ok(out)
}

fn freelist_ids(bytes: &[u8], count: usize) -> Result<Vec<u64>, BoltError> {
    let (count, start) = if count == 0xFFFF {
        (get_u64(bytes, HEADER)? as usize, HEADER + 8)
    } else {
        (count, HEADER)
    };
    (0..count).map(|i| get_u64(bytes, start + 8 * i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(data: &[(Vec<u8>, Vec<Record>)]) -> Vec<BucketSource> {
        data.iter()
            .map(|(name, records)| BucketSource {
                name: name.clone(),
                records: Box::new(VecSource::new(records.clone())),
            })
            .collect()
    }

    fn write(data: &[(Vec<u8>, Vec<Record>)]) -> Vec<u8> {
        let plan = plan(sources(data)).expect("plan");
        let mut w = Writer::new(plan.clone(), sources(data)).expect("writer");
        let mut out = Vec::new();
        while let Some(p) = w.next_page().expect("page") {
            assert_eq!(p.len() % PAGE_SIZE, 0);
            out.extend_from_slice(&p);
        }
        assert_eq!(out.len() as u64, plan.size_bytes());
        out
    }

    fn read_all(db: &Db<Vec<u8>>) -> Vec<(Vec<u8>, Vec<Record>)> {
        db.buckets()
            .expect("buckets")
            .into_iter()
            .map(|name| {
                let mut records = Vec::new();
                db.for_each(&name, &mut |k, v| {
                    records.push((k.to_vec(), v.to_vec()));
                    Ok(())
                })
                .expect("for_each");
                (name, records)
            })
            .collect()
    }

    fn sample() -> Vec<(Vec<u8>, Vec<Record>)> {
        let many: Vec<Record> = (0..20_000u32)
            .map(|i| (i.to_be_bytes().to_vec(), format!("value {i}").into_bytes()))
            .collect();
        let big: Vec<Record> = (0..5u8)
            .map(|i| (vec![b'k', i], vec![i; 3 * PAGE_SIZE + 100 * i as usize]))
            .collect();
        vec![
            (b"a-empty".to_vec(), Vec::new()),
            (b"big".to_vec(), big),
            (b"key".to_vec(), many),
            (b"one".to_vec(), vec![(b"x".to_vec(), Vec::new())]),
        ]
    }

    #[test]
    fn what_the_writer_streams_reads_back_equal_and_passes_the_check() {
        let data = sample();
        let db = Db::open(write(&data)).expect("open");
        assert_eq!(read_all(&db), data);
        assert_eq!(db.check().expect("check"), Vec::<String>::new());
        // 20 000 records need branch pages over branch pages.
        assert!(db.meta.high_water > 100);
    }

    #[test]
    fn a_database_changed_between_plan_and_write_is_refused() {
        let data = sample();
        let plan = plan(sources(&data)).expect("plan");
        let mut changed = data.clone();
        changed[2].1.truncate(10_000);
        let mut w = Writer::new(plan, sources(&changed)).expect("writer");
        let err = loop {
            match w.next_page() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a changed database was written whole"),
                Err(e) => break e,
            }
        };
        assert!(
            err.to_string().contains("changed between plan and write"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_meta_page_falls_back_to_the_other_and_two_bad_ones_are_refused() {
        let mut bytes = write(&sample());
        bytes[HEADER + 20] ^= 0xff; // meta 0's root: its checksum no longer matches
        let db = Db::open(bytes.clone()).expect("meta 1 still valid");
        assert_eq!(db.meta.txid, 1);
        bytes[PAGE_SIZE + HEADER + 20] ^= 0xff;
        assert!(Db::open(bytes).is_err());
    }

    #[test]
    fn the_check_finds_a_page_used_twice_and_a_page_nobody_uses() {
        let data = vec![(
            b"k".to_vec(),
            (0..2000u32)
                .map(|i| (i.to_be_bytes().to_vec(), vec![1; 40]))
                .collect(),
        )];
        let mut bytes = write(&data);
        let db = Db::open(bytes.clone()).expect("open");
        let last = db.meta.high_water - 1;
        // The root (a branch page, written last) points its second child at its first.
        let root = (last as usize) * PAGE_SIZE;
        assert_eq!(get_u16(&bytes, root + 8).expect("flags"), BRANCH_PAGE);
        let first_child = get_u64(&bytes, root + HEADER + 8).expect("child");
        put_u64(&mut bytes, root + HEADER + ELEMENT + 8, first_child);
        let problems = Db::open(bytes).expect("open").check().expect("check");
        assert!(
            problems.iter().any(|p| p.contains("multiple references")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("unreachable unfreed")),
            "{problems:?}"
        );
    }

    #[test]
    fn truncated_files_and_bad_magic_are_refused_not_panicked_on() {
        let bytes = write(&sample());
        assert!(Db::open(bytes[..PAGE_SIZE * 3].to_vec()).is_err());
        assert!(Db::open(vec![0u8; 100]).is_err());
        let mut bad = bytes.clone();
        bad[HEADER] ^= 1;
        bad[PAGE_SIZE + HEADER] ^= 1;
        assert!(Db::open(bad).is_err());
    }
}
