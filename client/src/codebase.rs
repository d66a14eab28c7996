//! Uploading a local directory as a codebase: [`scan`] walks it (honouring `.gitignore`,
//! skipping a default ignore set and secrets unless asked, refusing what a codebase cannot hold),
//! then [`Client::upload_dir`] asks which contents the server lacks and streams only those, so a
//! second upload of the same tree, or one resumed after a failure, sends almost nothing.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use corral_proto::v1 as pb;
use futures::StreamExt;

use crate::{Client, ClientError, Result};

/// Directories skipped unless [`ScanOptions::include_ignored`].
pub const DEFAULT_IGNORED_DIRS: [&str; 4] = [".git", "node_modules", "__pycache__", ".venv"];
/// Bytes per data message.
const PIECE: usize = 1 << 20;
/// Digests asked about per MissingContent call.
const ASK_BATCH: usize = 5_000;

/// What to upload from a directory.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Also upload what `.gitignore` files and the default ignore set exclude.
    pub include_ignored: bool,
    /// Also upload secrets files (`.env*`, `*.key`, `*.pem`, `credentials*`, `secrets/`); they
    /// are then hidden by the `agent-safe` preset, not missing.
    pub include_secrets: bool,
}

/// One entry to upload.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// Relative, '/'-separated.
    pub path: String,
    pub kind: pb::FileKind,
    pub mode: u32,
    pub size: u64,
    /// BLAKE3 (hex) of a file's content.
    pub digest: String,
    pub link_target: String,
    pub local: PathBuf,
}

/// Why a directory cannot be uploaded.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {why}")]
    Refused { path: String, why: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<ScanError> for ClientError {
    fn from(e: ScanError) -> Self {
        ClientError::Items(Box::new(e))
    }
}

fn is_secret(name: &str, is_dir: bool) -> bool {
    if is_dir {
        return name == "secrets";
    }
    name.starts_with(".env") || name.ends_with(".key") || name.ends_with(".pem") || name.starts_with("credentials")
}

/// The entries of `root` to upload, in path order, with their digests.
pub fn scan(root: &Path, options: &ScanOptions) -> std::result::Result<Vec<LocalFile>, ScanError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| ScanError::Io { path, source }
    };
    let root = root.canonicalize().map_err(io(root))?;
    let mut walk = ignore::WalkBuilder::new(&root);
    walk.hidden(false).parents(false).follow_links(false).sort_by_file_name(|a, b| a.cmp(b));
    walk.git_ignore(!options.include_ignored).git_exclude(false).git_global(false).require_git(false);
    let (include_ignored, include_secrets) = (options.include_ignored, options.include_secrets);
    walk.filter_entry(move |e| {
        let name = e.file_name().to_string_lossy();
        let is_dir = e.file_type().is_some_and(|t| t.is_dir());
        if !include_ignored && is_dir && DEFAULT_IGNORED_DIRS.contains(&name.as_ref()) {
            return false;
        }
        include_secrets || !is_secret(&name, is_dir)
    });
    let mut out = Vec::new();
    for entry in walk.build() {
        let entry =
            entry.map_err(|e| ScanError::Io { path: root.display().to_string(), source: std::io::Error::other(e) })?;
        let local = entry.path().to_path_buf();
        if local == root {
            continue;
        }
        let rel = relative(&root, &local)?;
        let meta = std::fs::symlink_metadata(&local).map_err(io(&local))?;
        let refuse = |why: &str| ScanError::Refused { path: rel.clone(), why: why.to_owned() };
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o777;
        let file = if ft.is_dir() {
            LocalFile {
                path: rel.clone(),
                kind: pb::FileKind::Directory,
                mode,
                size: 0,
                digest: String::new(),
                link_target: String::new(),
                local,
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&local).map_err(io(&local))?;
            check_link(&root, &local, &target).map_err(|why| refuse(&why))?;
            let target = target.to_str().ok_or_else(|| refuse("its target is not UTF-8"))?.to_owned();
            LocalFile {
                path: rel.clone(),
                kind: pb::FileKind::Symlink,
                mode,
                size: 0,
                digest: String::new(),
                link_target: target,
                local,
            }
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                return Err(refuse("is a hard link (a codebase holds one path per file); copy it instead"));
            }
            if meta.mode() & 0o7000 != 0 {
                return Err(refuse("has set-id or sticky bits"));
            }
            let digest = hash_file(&local).map_err(io(&local))?;
            LocalFile {
                path: rel.clone(),
                kind: pb::FileKind::Regular,
                mode,
                size: meta.len(),
                digest,
                link_target: String::new(),
                local,
            }
        } else {
            return Err(refuse("is a device, fifo or socket; only files, directories and symlinks are uploaded"));
        };
        out.push(file);
    }
    Ok(out)
}

fn relative(root: &Path, p: &Path) -> std::result::Result<String, ScanError> {
    let rel = p
        .strip_prefix(root)
        .map_err(|_| ScanError::Refused { path: p.display().to_string(), why: "lies outside the directory".into() })?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().ok_or_else(|| ScanError::Refused {
                path: rel.display().to_string(),
                why: "its name is not UTF-8".into(),
            })?),
            _ => {
                return Err(ScanError::Refused {
                    path: rel.display().to_string(),
                    why: "is not a plain relative path".into(),
                });
            }
        }
    }
    Ok(parts.join("/"))
}

/// A symlink may point only inside the tree, by a relative path.
fn check_link(root: &Path, link: &Path, target: &Path) -> std::result::Result<(), String> {
    if target.is_absolute() {
        return Err(format!("is a symlink to the absolute path {}; it would leave the tree", target.display()));
    }
    let mut at: Vec<Component<'_>> = link.parent().unwrap_or(root).components().collect();
    for c in target.components() {
        match c {
            Component::ParentDir => {
                at.pop();
            }
            Component::Normal(_) => at.push(c),
            _ => {}
        }
    }
    let resolved: PathBuf = at.iter().collect();
    if !resolved.starts_with(root) {
        return Err(format!("is a symlink to {}, which leaves the tree", target.display()));
    }
    Ok(())
}

fn hash_file(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Progress of an upload: bytes and files done so far, of the totals.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

impl Client {
    /// Uploads `files` (from [`scan`]) to codebase `id`; `replace` makes them the whole tree.
    /// `progress` is called as files go.
    pub async fn upload_files(
        &self,
        id: &str,
        files: Vec<LocalFile>,
        replace: bool,
        progress: impl Fn(Progress) + Send + 'static,
    ) -> Result<pb::UploadResponse> {
        let mut digests: Vec<String> =
            files.iter().filter(|f| f.kind == pb::FileKind::Regular).map(|f| f.digest.clone()).collect();
        digests.sort();
        digests.dedup();
        let mut missing = std::collections::HashSet::new();
        for batch in digests.chunks(ASK_BATCH) {
            let req = pb::MissingContentRequest { codebase_id: id.to_owned(), digests: batch.to_vec() };
            missing.extend(self.codebases.clone().missing_content(req).await?.into_inner().digests);
        }
        let totals = Progress {
            files_total: files.len() as u64,
            bytes_total: files.iter().map(|f| f.size).sum(),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadRequest>(8);
        let start = pb::UploadRequest {
            item: Some(pb::upload_request::Item::Start(pb::UploadStart { codebase_id: id.to_owned(), replace })),
        };
        let feeder = tokio::task::spawn_blocking(move || feed(tx, start, files, missing, totals, progress));
        let resp = self.codebases.clone().upload(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
        let fed = feeder.await.map_err(|e| ClientError::Items(Box::new(e)))?;
        let resp = resp?.into_inner();
        fed?;
        Ok(resp)
    }

    /// Creates a codebase named `name` and uploads `dir` into it.
    pub async fn codebase_from_dir(
        &self,
        name: &str,
        dir: &Path,
        options: &ScanOptions,
        progress: impl Fn(Progress) + Send + 'static,
    ) -> Result<pb::UploadResponse> {
        let files = scan(dir, options)?;
        let req = pb::CreateCodebaseRequest { name: name.to_owned(), ..Default::default() };
        let cb =
            self.codebases.clone().create(req).await?.into_inner().codebase.ok_or(ClientError::Missing("codebase"))?;
        self.upload_files(&cb.id, files, true, progress).await
    }

    /// Downloads a file's bytes or a directory's tar stream, handing each piece to `sink`.
    pub async fn download_codebase(
        &self,
        id: &str,
        path: &str,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<pb::DownloadHeader> {
        let req = pb::DownloadCodebaseRequest { codebase_id: id.to_owned(), path: path.to_owned() };
        let mut stream = self.codebases.clone().download(req).await?.into_inner();
        let mut header = None;
        while let Some(chunk) = stream.next().await {
            match chunk?.item {
                Some(pb::download_chunk::Item::Header(h)) => header = Some(h),
                Some(pb::download_chunk::Item::Data(d)) => sink(&d).map_err(|e| ClientError::Items(Box::new(e)))?,
                None => {}
            }
        }
        header.ok_or(ClientError::Missing("download header"))
    }
}

/// Sends the upload's messages (blocking reads of local files, on a blocking thread).
fn feed(
    tx: tokio::sync::mpsc::Sender<pb::UploadRequest>,
    start: pb::UploadRequest,
    files: Vec<LocalFile>,
    missing: std::collections::HashSet<String>,
    mut done: Progress,
    progress: impl Fn(Progress),
) -> std::result::Result<(), ClientError> {
    use pb::upload_request::Item;
    let send = |m: pb::UploadRequest| {
        tx.blocking_send(m).map_err(|_| ClientError::Missing("upload stream (the server closed it)"))
    };
    send(start)?;
    let mut sent_content = std::collections::HashSet::new();
    for f in files {
        let by_reference = f.kind == pb::FileKind::Regular
            && f.size > 0
            && (!missing.contains(&f.digest) || sent_content.contains(&f.digest));
        let header = pb::UploadFile {
            path: f.path.clone(),
            kind: f.kind as i32,
            mode: f.mode,
            size: f.size as i64,
            digest: f.digest.clone(),
            by_reference,
            link_target: f.link_target.clone(),
        };
        send(pb::UploadRequest { item: Some(Item::File(header)) })?;
        if f.kind == pb::FileKind::Regular && !by_reference {
            let mut file = std::fs::File::open(&f.local).map_err(|e| ClientError::Items(Box::new(e)))?;
            let mut left = f.size;
            while left > 0 {
                let mut buf = vec![0u8; PIECE.min(left as usize)];
                file.read_exact(&mut buf)
                    .map_err(|e| ClientError::Items(format!("{}: changed while uploading ({e})", f.path).into()))?;
                left -= buf.len() as u64;
                send(pb::UploadRequest { item: Some(Item::Data(buf)) })?;
            }
            sent_content.insert(f.digest.clone());
        }
        done.files_done += 1;
        done.bytes_done += f.size;
        progress(done);
    }
    Ok(())
}
