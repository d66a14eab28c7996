//! Validation and wire conversion for codebases and path rules.

use corral_blob::Digest;
use corral_core::codebase::{self, Change, ChangeKind, CodebaseMount, CodebaseRecord, Entry, EntryKind};
use corral_core::ids::CodebaseId;
use corral_core::permissions::{self, PatternType, Permission, PermissionRule, Preset, Rules};
use corral_proto::v1 as pb;

use crate::codebases::upload::{FileHeader, UploadItem};
use crate::error::{ApiError, ApiResult};

/// Longest codebase name and owner, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Most digests one MissingContent call may ask about.
pub const MAX_DIGESTS: usize = 10_000;

pub fn codebase_id(field: &str, raw: &str) -> ApiResult<CodebaseId> {
    CodebaseId::parse(raw).map_err(|e| ApiError::invalid_id(field, e))
}

pub fn name(field: &str, raw: &str, required: bool) -> ApiResult<String> {
    if required && raw.trim().is_empty() {
        return Err(ApiError::field(field, "is empty"));
    }
    if raw.chars().count() > MAX_NAME_CHARS || raw.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters, none of them control characters"),
        ));
    }
    Ok(raw.to_owned())
}

pub fn digest(field: &str, raw: &str) -> ApiResult<Digest> {
    raw.parse().map_err(|_| {
        ApiError::field(field, format!("{:?} is not a BLAKE3 digest (64 lowercase hex digits)", trim(raw)))
    })
}

fn trim(raw: &str) -> String {
    raw.chars().take(80).collect()
}

pub fn permission_from_pb(field: &str, raw: i32) -> ApiResult<Permission> {
    match pb::Permission::try_from(raw) {
        Ok(pb::Permission::None) => Ok(Permission::None),
        Ok(pb::Permission::View) => Ok(Permission::View),
        Ok(pb::Permission::Read) => Ok(Permission::Read),
        Ok(pb::Permission::Write) => Ok(Permission::Write),
        _ => Err(ApiError::field(field, "must be one of none, view, read, write")),
    }
}

pub fn permission_to_pb(p: Permission) -> pb::Permission {
    match p {
        Permission::None => pb::Permission::None,
        Permission::View => pb::Permission::View,
        Permission::Read => pb::Permission::Read,
        Permission::Write => pb::Permission::Write,
    }
}

pub fn pattern_type_from_pb(field: &str, raw: i32) -> ApiResult<PatternType> {
    match pb::PatternType::try_from(raw) {
        Ok(pb::PatternType::Unspecified | pb::PatternType::Glob) => Ok(PatternType::Glob),
        Ok(pb::PatternType::Directory) => Ok(PatternType::Directory),
        Ok(pb::PatternType::File) => Ok(PatternType::File),
        Err(_) => Err(ApiError::field(field, format!("{raw} is not a pattern type (glob, directory, file)"))),
    }
}

pub fn rule_to_pb(r: &PermissionRule) -> pb::PermissionRule {
    let kind = match r.kind {
        PatternType::Glob => pb::PatternType::Glob,
        PatternType::Directory => pb::PatternType::Directory,
        PatternType::File => pb::PatternType::File,
    };
    pb::PermissionRule {
        pattern: r.pattern.clone(),
        permission: permission_to_pb(r.permission) as i32,
        r#type: kind as i32,
        priority: r.priority,
    }
}

pub fn rules_from_pb(raw: &[pb::PermissionRule]) -> ApiResult<Vec<PermissionRule>> {
    raw.iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(PermissionRule {
                pattern: r.pattern.clone(),
                permission: permission_from_pb(&format!("permissions[{i}].permission"), r.permission)?,
                kind: pattern_type_from_pb(&format!("permissions[{i}].type"), r.r#type)?,
                priority: r.priority,
            })
        })
        .collect()
}

/// What a create asks of its codebase, before the codebase is looked up.
#[derive(Debug, Clone)]
pub struct CodebaseAsk {
    pub id: CodebaseId,
    pub preset: String,
    pub extra: Vec<PermissionRule>,
    pub path: String,
}

/// The codebase part of a create request: `None` without a codebase (and then no rules).
pub fn codebase_ask(req: &pb::CreateSandboxRequest) -> ApiResult<Option<CodebaseAsk>> {
    if req.codebase_id.is_empty() {
        for (set, field) in [
            (!req.preset.is_empty(), "preset"),
            (!req.permissions.is_empty(), "permissions"),
            (!req.codebase_path.is_empty(), "codebase_path"),
        ] {
            if set {
                return Err(ApiError::field(field, "applies only to a sandbox with a codebase_id"));
            }
        }
        return Ok(None);
    }
    let path = match req.codebase_path.as_str() {
        "" => "/workspace".to_owned(),
        p => mount_path(p)?,
    };
    Ok(Some(CodebaseAsk {
        id: codebase_id("codebase_id", &req.codebase_id)?,
        preset: req.preset.clone(),
        extra: rules_from_pb(&req.permissions)?,
        path,
    }))
}

fn mount_path(raw: &str) -> ApiResult<String> {
    let field = "codebase_path";
    let ok_root = ["/workspace", "/mnt"].iter().any(|r| raw == *r || raw.starts_with(&format!("{r}/")));
    if !ok_root || raw.len() > 256 {
        return Err(ApiError::field(field, format!("{:?} must be /workspace, /mnt or a path under them", trim(raw))));
    }
    let rel = raw.trim_start_matches('/');
    codebase::check_path(rel).map_err(|e| ApiError::field(field, e))?;
    Ok(raw.to_owned())
}

/// The mount a sandbox gets: the preset's rules then the extras, compiled to check them; a bad
/// rule is named by its place in the request.
pub fn mount(ask: CodebaseAsk, manifest: String) -> ApiResult<CodebaseMount> {
    let preset = match ask.preset.as_str() {
        "" if ask.extra.is_empty() => Some(Preset::ReadOnly),
        "" => None,
        p => Some(Preset::parse(p).map_err(|e| ApiError::field("preset", e.reason))?),
    };
    let rules = permissions::expand(preset, &ask.extra);
    let from_preset = rules.len() - ask.extra.len();
    Rules::compile(&rules).map_err(|e| match e.index.checked_sub(from_preset) {
        Some(i) => ApiError::field(format!("permissions[{i}]"), format!("{:?}: {}", e.pattern, e.reason)),
        None => ApiError::Internal(format!("preset rule {e}")),
    })?;
    Ok(CodebaseMount {
        id: ask.id,
        manifest,
        path: ask.path,
        preset: preset.map(|p| p.name().to_owned()).unwrap_or_default(),
        extra: ask.extra,
        rules,
    })
}

pub fn codebase_to_pb(r: CodebaseRecord, sandboxes: usize) -> pb::Codebase {
    pb::Codebase {
        id: r.id.to_string(),
        name: r.name,
        tenant: r.tenant.to_string(),
        owner: r.owner,
        labels: r.labels.into_iter().collect(),
        file_count: r.file_count as i64,
        size_bytes: r.size_bytes as i64,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        digest: r.manifest.unwrap_or_default(),
        sandboxes: sandboxes as i64,
    }
}

pub fn change_to_pb(c: &Change) -> pb::Change {
    let kind = match c.kind {
        ChangeKind::Added => pb::ChangeKind::Added,
        ChangeKind::Modified => pb::ChangeKind::Modified,
        ChangeKind::Deleted => pb::ChangeKind::Deleted,
    };
    pb::Change { path: c.path.clone(), kind: kind as i32, file_kind: kind_to_pb(c.entry) as i32, size: c.size as i64 }
}

pub fn kind_to_pb(k: EntryKind) -> pb::FileKind {
    match k {
        EntryKind::File => pb::FileKind::Regular,
        EntryKind::Dir => pb::FileKind::Directory,
        EntryKind::Symlink => pb::FileKind::Symlink,
    }
}

pub fn file_to_pb(path: &str, e: &Entry) -> pb::CodebaseFile {
    pb::CodebaseFile {
        path: path.to_owned(),
        kind: kind_to_pb(e.kind) as i32,
        mode: e.mode,
        size: e.size as i64,
        digest: e.digest.clone().unwrap_or_default(),
        link_target: e.target.clone().unwrap_or_default(),
    }
}

/// One upload message, checked. `n` counts the file headers so far (for error messages).
pub fn upload_item(raw: pb::UploadRequest, n: usize) -> ApiResult<UploadItem> {
    use pb::upload_request::Item;
    match raw.item {
        None => Err(ApiError::field("item", "an upload message must carry start, file or data")),
        Some(Item::Start(s)) => {
            Ok(UploadItem::Start { id: codebase_id("start.codebase_id", &s.codebase_id)?, replace: s.replace })
        }
        Some(Item::Data(d)) => Ok(UploadItem::Data(d.into())),
        Some(Item::File(f)) => Ok(UploadItem::File(file_header(f, n)?)),
    }
}

fn file_header(f: pb::UploadFile, n: usize) -> ApiResult<FileHeader> {
    let field = |name: &str| format!("file[{n}].{name}");
    codebase::check_path(&f.path).map_err(|e| ApiError::field(field("path"), e))?;
    let kind = match pb::FileKind::try_from(f.kind) {
        Ok(pb::FileKind::Unspecified | pb::FileKind::Regular) => EntryKind::File,
        Ok(pb::FileKind::Directory) => EntryKind::Dir,
        Ok(pb::FileKind::Symlink) => EntryKind::Symlink,
        Err(_) => {
            return Err(ApiError::field(
                field("kind"),
                format!(
                    "{:?}: only regular files, directories and symlinks are stored (no devices, fifos or sockets)",
                    f.path
                ),
            ));
        }
    };
    if f.mode & !0o777 != 0 {
        return Err(ApiError::field(
            field("mode"),
            format!("{:?}: {:o} has set-id, sticky or type bits; only 0o777 permission bits", f.path, f.mode),
        ));
    }
    if f.size < 0 || (kind != EntryKind::File && f.size != 0) {
        return Err(ApiError::field(
            field("size"),
            format!("{:?}: {} is not a valid size for this kind", f.path, f.size),
        ));
    }
    let target = match kind {
        EntryKind::Symlink => {
            codebase::check_link_target(&f.path, &f.link_target)
                .map_err(|e| ApiError::field(field("link_target"), e))?;
            Some(f.link_target)
        }
        _ if !f.link_target.is_empty() => {
            return Err(ApiError::field(field("link_target"), "only symlinks have a target"));
        }
        _ => None,
    };
    let digest = if f.digest.is_empty() { None } else { Some(digest(&field("digest"), &f.digest)?) };
    if f.by_reference && kind != EntryKind::File {
        return Err(ApiError::field(field("by_reference"), "only regular files are sent by reference"));
    }
    Ok(FileHeader {
        path: f.path,
        kind,
        mode: f.mode,
        size: f.size as u64,
        digest,
        by_reference: f.by_reference,
        target,
    })
}
