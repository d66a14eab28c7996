//! Sandbox path resolution and the `openat2`-confined file operations of `corral_init::files`.
//!
//! Input: up to [`MAX_OPS`] lines, each an operation byte, a parameter byte and a sandbox path.
//! Invariants:
//!
//! - [`files::resolve`] agrees with a component-by-component model of the documented rules, its
//!   components are plain names, and the canonical form of a resolved path resolves the same;
//! - on a scratch tree whose areas hold symlinks leading out (absolute, `..`, into the other
//!   area, to a file outside) and a FIFO, reads, writes, listings and removes never escape their
//!   area: nothing outside it changes, a read never returns the outside file's contents, a
//!   listing never shows the outside directory, a FIFO is never read.
#![allow(unsafe_code)] // mkfifo(3), to put a FIFO in the scratch tree

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::hash::BuildHasher;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use corral_init::files::{self, Area, MAX_PATH, SandboxPath, Target, WritePiece};

/// Most operations one input runs.
pub const MAX_OPS: usize = 8;

pub fn run(data: &[u8]) {
    let ops: Vec<Op> = data.split(|b| *b == b'\n').take(MAX_OPS).filter_map(Op::parse).collect();
    for op in &ops {
        check_resolve(op.path);
    }
    let confined: Vec<(&Op, SandboxPath)> =
        ops.iter().filter_map(|op| files::resolve(op.path).ok().map(|p| (op, p))).collect();
    if !confined.is_empty() {
        let scratch = Scratch::new();
        for (op, path) in confined {
            scratch.apply(op, path);
        }
    }
}

/// One operation: `code % 4` picks read, write, list or remove; `param` tunes it.
struct Op<'a> {
    code: u8,
    param: u8,
    path: &'a str,
}

impl<'a> Op<'a> {
    fn parse(line: &'a [u8]) -> Option<Self> {
        let (&code, rest) = line.split_first()?;
        let (&param, path) = rest.split_first()?;
        Some(Op { code, param, path: std::str::from_utf8(path).ok()? })
    }
}

/// The documented rules, component by component: `/workspace…` and `/tmp…` name their area,
/// relative paths are in `/workspace`, empty and `.` components vanish, `..` is refused.
fn model(path: &str) -> Option<(Area, Vec<&str>)> {
    if path.len() > MAX_PATH || path.contains('\0') {
        return None;
    }
    let mut comps = path.split('/');
    let area = if path.starts_with('/') {
        comps.next();
        match comps.next() {
            Some("workspace") => Area::Workspace,
            Some("tmp") => Area::Tmp,
            _ => return None,
        }
    } else {
        Area::Workspace
    };
    let parts: Vec<&str> = comps.filter(|c| !c.is_empty() && *c != ".").collect();
    if parts.contains(&"..") { None } else { Some((area, parts)) }
}

fn check_resolve(path: &str) {
    let got = files::resolve(path);
    let want = model(path);
    let got_view = got.as_ref().ok().map(|p| (p.area, p.parts.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(got_view, want, "resolve({path:?}) = {got:?}");
    let Ok(resolved) = got else { return };
    for part in &resolved.parts {
        assert!(!part.is_empty() && part != "." && part != "..", "component {part:?} of {path:?}");
        assert!(!part.contains('/') && !part.contains('\0'), "component {part:?} of {path:?}");
    }
    let root = match resolved.area {
        Area::Workspace => "/workspace",
        Area::Tmp => "/tmp",
    };
    let canonical = [root].into_iter().chain(resolved.parts.iter().map(String::as_str)).collect::<Vec<_>>().join("/");
    if canonical.len() <= MAX_PATH {
        assert_eq!(files::resolve(&canonical), Ok(resolved), "the canonical form {canonical:?} of {path:?}");
    }
}

/// What a directory holds, recursively, without following symlinks: path → file contents,
/// symlink target or (for directories and FIFOs) a kind marker.
type Snapshot = BTreeMap<PathBuf, Vec<u8>>;

fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("listing {}: {e}", d.display())) {
            let path = entry.expect("a directory entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat of a listed entry");
            let value = if meta.is_symlink() {
                fs::read_link(&path).expect("a symlink's target").into_os_string().into_encoded_bytes()
            } else if meta.is_dir() {
                todo.push(path.clone());
                b"<dir>".to_vec()
            } else if meta.is_file() {
                fs::read(&path).expect("a regular file's contents")
            } else {
                b"<special>".to_vec()
            };
            out.insert(path.strip_prefix(dir).expect("beneath the snapshot root").to_path_buf(), value);
        }
    }
    out
}

/// A scratch tree, removed on drop: `outside-<marker>/secret` next to `sandbox/{workspace,tmp}`.
struct Scratch {
    dir: tempfile::TempDir,
    marker: String,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("corral-fuzz-").tempdir().expect("a scratch directory");
        let marker = format!("{:016x}", std::hash::RandomState::new().hash_one(dir.path()));
        let s = Scratch { dir, marker };
        let outside = s.dir.path().join(format!("outside-{}", s.marker));
        let (ws, tmp) = (s.area(Area::Workspace), s.area(Area::Tmp));
        for d in [&outside, &ws.join("dir"), &tmp] {
            fs::create_dir_all(d).expect("scratch directories");
        }
        fs::write(outside.join("secret"), &s.marker).expect("the outside file");
        fs::write(ws.join("dir/file"), b"inside").expect("a workspace file");
        fs::write(tmp.join("t"), b"tmp").expect("a tmp file");
        let name = format!("outside-{}", s.marker);
        let links = [
            ("abs", outside.clone()),
            ("up", Path::new("../..").join(&name)),
            ("secret-link", Path::new("../..").join(&name).join("secret")),
            ("other", PathBuf::from("../tmp")),
            ("self", PathBuf::from(".")),
        ];
        for (link, target) in links {
            symlink(target, ws.join(link)).expect("a scratch symlink");
        }
        let fifo = CString::new(ws.join("fifo").into_os_string().into_encoded_bytes()).expect("no NUL");
        // SAFETY: `fifo` is a valid C string for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
        s
    }

    fn area(&self, area: Area) -> PathBuf {
        let name = if area == Area::Workspace { "workspace" } else { "tmp" };
        self.dir.path().join("sandbox").join(name)
    }

    /// Everything an operation on `area` must leave alone.
    fn beyond(&self, area: Area) -> Snapshot {
        let other = if area == Area::Workspace { Area::Tmp } else { Area::Workspace };
        let mut s = snapshot(&self.area(other));
        s.extend(snapshot(&self.dir.path().join(format!("outside-{}", self.marker))));
        let top: Vec<_> =
            fs::read_dir(self.dir.path()).expect("scratch").map(|e| e.expect("entry").file_name()).collect();
        s.insert(PathBuf::from("<top>"), format!("{top:?}").into_bytes());
        let sandbox = self.dir.path().join("sandbox");
        let areas: Vec<_> = fs::read_dir(sandbox).expect("sandbox").map(|e| e.expect("entry").file_name()).collect();
        s.insert(PathBuf::from("<areas>"), format!("{areas:?}").into_bytes());
        s
    }

    fn apply(&self, op: &Op<'_>, path: SandboxPath) {
        let owner = (op.param & 0x80 != 0).then(|| {
            let meta = fs::metadata(self.dir.path()).expect("the scratch directory");
            (meta.uid(), meta.gid())
        });
        let target = Target { root: self.area(path.area), parts: path.parts, owner };
        let before = self.beyond(path.area);
        let what = match op.code % 4 {
            0 => self.read(&target, op.param),
            1 => write(&target, op.param),
            2 => self.list(&target),
            _ => files::remove(&target, op.param & 1 == 1).map(|()| "removed".to_owned()),
        };
        let after = self.beyond(path.area);
        assert!(before == after, "{:?} on {:?} ({what:?}) changed what lies outside its area", op.code % 4, op.path);
    }

    fn read(&self, target: &Target, param: u8) -> std::io::Result<String> {
        let data = files::read(target, u64::from(param & 7), u32::from(param) * 4)?;
        assert!(data.data.len() <= usize::from(param) * 4, "read more than asked");
        let leaked = data.data.windows(self.marker.len()).any(|w| w == self.marker.as_bytes());
        assert!(!leaked, "read returned the file outside the area: {:?}", target.parts);
        // What the path names on the host, following symlinks as a careless resolver would.
        if let Ok(meta) = fs::metadata(target.root.join(target.parts.join("/"))) {
            assert!(meta.is_file(), "read something that is not a regular file: {:?}", target.parts);
        }
        Ok(format!("read {} bytes", data.data.len()))
    }

    fn list(&self, target: &Target) -> std::io::Result<String> {
        let entries = files::list(target)?;
        assert!(entries.windows(2).all(|w| w[0].name < w[1].name), "entries not sorted and unique");
        let outside = entries.iter().find(|e| e.name.contains(&self.marker));
        assert!(outside.is_none(), "list of {:?} shows the outside directory", target.parts);
        Ok(format!("listed {} entries", entries.len()))
    }
}

/// A write in one piece, or in two (`param & 2`), of a fixed text.
fn write(target: &Target, param: u8) -> std::io::Result<String> {
    let data = b"written by the fuzzer";
    let (mode, token) = (0o600 | u32::from(param & 0o77), u64::from(param));
    let n = if param & 2 == 0 {
        files::write(target, &WritePiece { data, offset: 0, last: true, mode, token })?
    } else {
        let first = files::write(target, &WritePiece { data: &data[..7], offset: 0, last: false, mode, token })?;
        assert_eq!(first, 7, "bytes written by a first piece");
        files::write(target, &WritePiece { data: &data[7..], offset: 7, last: true, mode, token })?
    };
    assert_eq!(n, data.len() as u64, "bytes written");
    Ok(format!("wrote {n} bytes"))
}
