//! Lost unsynced writes: a FUSE file system of our own over a backing
//! directory on the real disk, mounted as a member's data directory. Every
//! operation passes through to the backing files at once, but the file
//! system remembers, per file, what is not yet fsynced: the length the file
//! had at its last fsync (0 for a file created since) and the old bytes of
//! every region overwritten below that length since. `crash` — called by the
//! nemesis after kill -9 — puts every file back as of its last fsync: old
//! bytes restored newest first, the file cut to its synced length. That is
//! what a power loss does to data the page cache held.
//! Simplifications: metadata (create, rename, unlink, mkdir) counts as
//! durable at once (a created file survives a crash, empty if never
//! fsynced); attributes and directory entries are never cached by the
//! kernel (TTL 0) so a restarted member sees the restored files.
//!
//! Tests: `tests` below mount it (root, /dev/fuse) and crash it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
};

const TTL: Duration = Duration::ZERO;

/// What a file owes since its last fsync.
#[derive(Debug, Default)]
struct Dirty {
    synced_len: u64,
    /// (offset, old bytes), oldest first.
    undo: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct Inner {
    backing: PathBuf,
    /// Inode → path relative to the backing directory (1 is the root).
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, (u64, File)>,
    next_fh: u64,
    dirty: BTreeMap<u64, Dirty>,
}

/// A handle the nemesis keeps: crash the file system, see what it owes.
#[derive(Clone)]
pub struct LazyFs {
    inner: Arc<Mutex<Inner>>,
}

/// The mounted file system; unmounted when dropped.
pub struct Mounted {
    pub fs: LazyFs,
    _session: fuser::BackgroundSession,
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn lock(inner: &Arc<Mutex<Inner>>) -> MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    fn full(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn ino_for(&mut self, rel: PathBuf) -> u64 {
        if let Some(i) = self.inos.get(&rel) {
            return *i;
        }
        self.next_ino += 1;
        let ino = self.next_ino;
        self.inos.insert(rel.clone(), ino);
        self.paths.insert(ino, rel);
        ino
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        self.paths.get(&parent).map(|p| p.join(name))
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, i32> {
        let rel = self.paths.get(&ino).ok_or(libc::ENOENT)?;
        let md = std::fs::symlink_metadata(self.full(rel)).map_err(|e| errno(&e))?;
        let t = |s: i64| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
        Ok(FileAttr {
            ino,
            size: md.size(),
            blocks: md.blocks(),
            atime: t(md.atime()),
            mtime: t(md.mtime()),
            ctime: t(md.ctime()),
            crtime: t(md.ctime()),
            kind: if md.is_dir() {
                FileType::Directory
            } else if md.file_type().is_symlink() {
                FileType::Symlink
            } else {
                FileType::RegularFile
            },
            perm: (md.mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Before bytes [offset, offset+len) of `ino` change: remember the old
    /// ones below the synced length.
    fn before_change(&mut self, ino: u64, file: &File, offset: u64, len: u64) {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let d = self.dirty.entry(ino).or_insert_with(|| Dirty {
            synced_len: size,
            undo: Vec::new(),
        });
        let end = (offset + len).min(d.synced_len).min(size);
        if offset < end {
            let mut old = vec![0u8; (end - offset) as usize];
            if file.read_exact_at(&mut old, offset).is_ok() {
                d.undo.push((offset, old));
            }
        }
    }

    fn move_paths(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, u64)> = self
            .inos
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (p, i) in moved {
            self.inos.remove(&p);
            let rest = p
                .strip_prefix(from)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let np = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            // A file replaced by the rename is gone.
            if let Some(old) = self.inos.insert(np.clone(), i) {
                self.paths.remove(&old);
                self.dirty.remove(&old);
            }
            self.paths.insert(i, np);
        }
    }
}

impl LazyFs {
    /// Mounts a file system over `backing` (created if missing) at `mountpoint`.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<Mounted, String> {
        std::fs::create_dir_all(backing).map_err(|e| format!("{}: {e}", backing.display()))?;
        std::fs::create_dir_all(mountpoint)
            .map_err(|e| format!("{}: {e}", mountpoint.display()))?;
        let mut inner = Inner {
            backing: backing.to_path_buf(),
            next_ino: 1,
            next_fh: 1,
            ..Inner::default()
        };
        inner.paths.insert(1, PathBuf::new());
        inner.inos.insert(PathBuf::new(), 1);
        let fs = LazyFs {
            inner: Arc::new(Mutex::new(inner)),
        };
        let opts = [MountOption::FSName("cairn-lazyfs".into()), MountOption::RW];
        let session = fuser::spawn_mount2(Server(fs.clone()), mountpoint, &opts)
            .map_err(|e| format!("mount {}: {e}", mountpoint.display()))?;
        Ok(Mounted {
            fs,
            _session: session,
        })
    }

    /// Bytes written since each file's last fsync (new data beyond the
    /// synced length plus overwritten regions), and how many files.
    pub fn unsynced(&self) -> (u64, usize) {
        let g = lock(&self.inner);
        let mut bytes = 0;
        let mut files = 0;
        for (ino, d) in &g.dirty {
            let Some(rel) = g.paths.get(ino) else {
                continue;
            };
            let len = std::fs::metadata(g.full(rel)).map(|m| m.len()).unwrap_or(0);
            let b = len.saturating_sub(d.synced_len)
                + d.undo.iter().map(|(_, v)| v.len() as u64).sum::<u64>();
            if b > 0 || len != d.synced_len {
                bytes += b;
                files += 1;
            }
        }
        (bytes, files)
    }

    /// Drops every unsynced write; returns (bytes, files) dropped. Call it
    /// only while no process has the files open (after kill -9).
    pub fn crash(&self) -> Result<(u64, usize), String> {
        let dropped = self.unsynced();
        let mut g = lock(&self.inner);
        g.handles.clear();
        let dirty = std::mem::take(&mut g.dirty);
        for (ino, d) in dirty {
            let Some(rel) = g.paths.get(&ino) else {
                continue;
            };
            let path = g.full(rel);
            let Ok(f) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            for (off, old) in d.undo.iter().rev() {
                f.write_all_at(old, *off)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            f.set_len(d.synced_len)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            f.sync_all()
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(dropped)
    }
}

struct Server(LazyFs);

impl Server {
    fn g(&self) -> MutexGuard<'_, Inner> {
        lock(&self.0.inner)
    }
}

impl Filesystem for Server {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut g = self.g();
        let Some(rel) = g.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if std::fs::symlink_metadata(g.full(&rel)).is_err() {
            return reply.error(libc::ENOENT);
        }
        let ino = g.ino_for(rel);
        match g.attr(ino) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.g().attr(ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut g = self.g();
        let Some(path) = g.paths.get(&ino).map(|r| g.full(r)) else {
            return reply.error(libc::ENOENT);
        };
        if let Some(mode) = mode {
            let perms = std::fs::Permissions::from_mode(mode & 0o7777);
            if let Err(e) = std::fs::set_permissions(&path, perms) {
                return reply.error(errno(&e));
            }
        }
        if let Some(size) = size {
            let f = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(e) => return reply.error(errno(&e)),
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if size < len {
                g.before_change(ino, &f, size, len - size);
            } else {
                g.before_change(ino, &f, len, 0);
            }
            if let Err(e) = f.set_len(size) {
                return reply.error(errno(&e));
            }
        }
        match g.attr(ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut g = self.g();
        let Some(rel) = g.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let path = g.full(&rel);
        if let Err(e) = std::fs::create_dir(&path) {
            return reply.error(errno(&e));
        }
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777));
        let ino = g.ino_for(rel);
        match g.attr(ino) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut g = self.g();
        let Some(rel) = g.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if let Err(e) = std::fs::remove_file(g.full(&rel)) {
            return reply.error(errno(&e));
        }
        if let Some(ino) = g.inos.remove(&rel) {
            g.paths.remove(&ino);
            g.dirty.remove(&ino);
        }
        reply.ok();
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut g = self.g();
        let Some(rel) = g.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if let Err(e) = std::fs::remove_dir(g.full(&rel)) {
            return reply.error(errno(&e));
        }
        if let Some(ino) = g.inos.remove(&rel) {
            g.paths.remove(&ino);
        }
        reply.ok();
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut g = self.g();
        let (Some(from), Some(to)) = (g.child(parent, name), g.child(newparent, newname)) else {
            return reply.error(libc::ENOENT);
        };
        if let Err(e) = std::fs::rename(g.full(&from), g.full(&to)) {
            return reply.error(errno(&e));
        }
        g.move_paths(&from, &to);
        reply.ok();
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let mut g = self.g();
        let Some(path) = g.paths.get(&ino).map(|r| g.full(r)) else {
            return reply.error(libc::ENOENT);
        };
        let acc = flags & libc::O_ACCMODE;
        let file = OpenOptions::new()
            .read(acc != libc::O_WRONLY)
            .write(acc != libc::O_RDONLY)
            .open(&path);
        let file = match file {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        if flags & libc::O_TRUNC != 0 {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            g.before_change(ino, &file, 0, len);
            if let Err(e) = file.set_len(0) {
                return reply.error(errno(&e));
            }
        }
        g.next_fh += 1;
        let fh = g.next_fh;
        g.handles.insert(fh, (ino, file));
        reply.opened(fh, 0);
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut g = self.g();
        let Some(rel) = g.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let path = g.full(&rel);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .create_new(flags & libc::O_EXCL != 0)
            .mode(mode & 0o7777)
            .open(&path);
        let file = match file {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        let ino = g.ino_for(rel);
        if !existed {
            g.dirty.insert(ino, Dirty::default());
        } else if flags & libc::O_TRUNC != 0 {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            g.before_change(ino, &file, 0, len);
            let _ = file.set_len(0);
        }
        g.next_fh += 1;
        let fh = g.next_fh;
        g.handles.insert(fh, (ino, file));
        match g.attr(ino) {
            Ok(a) => reply.created(&TTL, &a, 0, fh, 0),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let g = self.g();
        let Some((_, f)) = g.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset as u64 + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut g = self.g();
        let Some((ino, f)) = g
            .handles
            .get(&fh)
            .and_then(|(i, f)| Some((*i, f.try_clone().ok()?)))
        else {
            return reply.error(libc::EBADF);
        };
        g.before_change(ino, &f, offset as u64, data.len() as u64);
        match f.write_all_at(data, offset as u64) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lo: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.g().handles.remove(&fh);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, datasync: bool, reply: ReplyEmpty) {
        let mut g = self.g();
        if let Some((_, f)) = g.handles.get(&fh) {
            let r = if datasync {
                f.sync_data()
            } else {
                f.sync_all()
            };
            if let Err(e) = r {
                return reply.error(errno(&e));
            }
        }
        g.dirty.remove(&ino);
        reply.ok();
    }

    fn opendir(&mut self, _req: &Request<'_>, _ino: u64, _flags: i32, reply: ReplyOpen) {
        reply.opened(0, 0);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut g = self.g();
        let Some(rel) = g.paths.get(&ino).cloned() else {
            return reply.error(libc::ENOENT);
        };
        let entries = match std::fs::read_dir(g.full(&rel)) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut all = vec![
            (ino, FileType::Directory, ".".into()),
            (1, FileType::Directory, "..".into()),
        ];
        for e in entries.flatten() {
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                _ => FileType::RegularFile,
            };
            let child = g.ino_for(rel.join(e.file_name()));
            all.push((child, kind, e.file_name()));
        }
        for (i, (ino, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        use std::os::fd::AsRawFd;
        let mut g = self.g();
        let Some(f) = g.handles.get(&fh).and_then(|(_, f)| f.try_clone().ok()) else {
            return reply.error(libc::EBADF);
        };
        g.before_change(ino, &f, offset as u64, 0);
        // SAFETY: fallocate on an open descriptor of a backing file.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, length) };
        if rc == 0 {
            reply.ok();
        } else {
            reply.error(errno(&std::io::Error::last_os_error()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_crash_keeps_fsynced_bytes_and_drops_the_rest() {
        if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
            eprintln!("needs root and /dev/fuse; the smoke run covers it too");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let m = LazyFs::mount(&dir.path().join("b"), &dir.path().join("m")).expect("mounts");
        let p = dir.path().join("m/wal");
        let mut f = File::create(&p).expect("create through fuse");
        f.write_all(b"synced-").expect("write");
        f.sync_data().expect("fsync");
        f.write_all(b"lost").expect("write");
        f.write_all_at(b"SYN", 0).expect("overwrite");
        drop(f);
        std::fs::write(dir.path().join("m/never"), b"gone").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"SYNced-lost");
        let (bytes, files) = m.fs.crash().expect("crash");
        assert_eq!(files, 2, "{bytes}");
        assert_eq!(std::fs::read(&p).expect("read"), b"synced-");
        assert_eq!(
            std::fs::read(dir.path().join("m/never")).expect("read"),
            b""
        );
        assert_eq!(m.fs.unsynced(), (0, 0));
    }
}
