//! The seed corpus (`fuzz/corpus/<target>/<name>`), made from the inputs of the project's own
//! tests: the frames of `init/src/protocol.rs`'s tests, the paths of `init/src/files.rs`'s and
//! the runtime conformance suite's, the lines of `cli/src/batch_items.rs`'s, requests like the
//! coordinator's tests send, and the rules, paths and links of `core/src/permissions/tests.rs`
//! and `core/src/codebase.rs`'s tests. `corral-fuzz-seeds` writes them; `tests/corpus.rs` checks
//! the committed files are what this module makes.

use corral_core::permissions::{PermissionRule, Preset};
use corral_init::files::{Entry, FileData};
use corral_init::protocol::{self, Event, Exited, FileFailure, FileOp, FileReply, RESYNC_MAGIC, Request, SpawnRequest};
use corral_proto::v1 as pb;
use prost::Message;

/// One seed file: its name and contents.
pub type Seed = (String, Vec<u8>);

/// The seeds of the target named `target` (a name of [`crate::TARGETS`]).
pub fn of(target: &str) -> Vec<Seed> {
    match target {
        "init_protocol" => init_protocol(),
        "sandbox_paths" => sandbox_paths(),
        "batch_items" => batch_items(),
        "proto_convert" => proto_convert(),
        "permission_rules" => permission_rules(),
        other => panic!("no seeds for an unknown target {other:?}"),
    }
}

fn frames<T: serde::Serialize>(msgs: &[T]) -> Vec<u8> {
    msgs.iter().flat_map(|m| protocol::encode(m).expect("a test message encodes")).collect()
}

/// Control byte of [`crate::init_protocol`]: `piece`-byte reads of requests or events.
fn ctl(events: bool, piece: u8) -> u8 {
    ((piece - 1) << 1) | u8::from(events)
}

fn init_protocol() -> Vec<Seed> {
    let spawn = Request::Spawn(SpawnRequest {
        id: 7,
        argv: vec!["/bin/echo".into(), "hi".into()],
        env: vec![("PATH".into(), "/usr/bin".into())],
        cwd: "/workspace".into(),
        stdin: b"input".to_vec(),
        timeout_ms: 1000,
        max_output_bytes: 10,
        side_channel: true,
    });
    let kill = frames(&[Request::Kill { id: 9 }]);
    let mut resync = vec![ctl(false, 5)];
    resync.extend(&kill[..3]);
    resync.extend(RESYNC_MAGIC);
    resync.extend(42u64.to_le_bytes());
    resync.extend(&kill);
    let files = [
        FileOp::Read { path: "/workspace/a.txt".into(), offset: 0, len: 4096 },
        FileOp::Write { path: "notes/b".into(), data: b"x".to_vec(), offset: 0, last: true, mode: 0o644, token: 3 },
        FileOp::List { path: "/tmp".into() },
        FileOp::Remove { path: "/workspace/dir".into(), recursive: true },
    ];
    let file_requests: Vec<Request> = files.into_iter().zip(1..).map(|(op, id)| Request::File { id, op }).collect();
    let entry = Entry { name: "a.txt".into(), is_dir: false, is_symlink: false, size: 5, mode: 0o644, mtime_ms: 1 };
    let replies = [
        Ok(FileReply::Read(FileData { data: b"hello".to_vec(), size: 5, mode: 0o644 })),
        Ok(FileReply::List(vec![entry])),
        Ok(FileReply::Written(5)),
        Err(FileFailure { errno: 2, not_regular: false, message: "no such file".into() }),
    ];
    let mut events = vec![Event::Ready, Event::Started { id: 7, pid: 12 }];
    events.push(Event::Stdout { id: 7, data: b"hi\n".to_vec() });
    events.push(Event::Side { id: 7, data: b"PWD=/workspace\0".to_vec() });
    events.push(Event::Exited(Exited {
        id: 7,
        exit_code: 0,
        signal: 0,
        timed_out: false,
        truncated: false,
        duration_ms: 3,
    }));
    events.extend(replies.into_iter().zip(1..).map(|(result, id)| Event::File { id, result }));
    let seed = |name: &str, ctl: u8, bytes: Vec<u8>| (name.to_owned(), [vec![ctl], bytes].concat());
    vec![
        seed(
            "spawn-kill",
            ctl(false, 3),
            frames(&[spawn, Request::Kill { id: 7 }, Request::Signal { id: 7, signal: 2 }]),
        ),
        ("resync".to_owned(), resync),
        seed("oversized", ctl(true, 1), (protocol::MAX_FRAME as u32 + 1).to_le_bytes().to_vec()),
        seed("file-requests", ctl(false, 64), frames(&file_requests)),
        seed("events", ctl(true, 7), frames(&events)),
    ]
}

fn sandbox_paths() -> Vec<Seed> {
    // Operation codes of `crate::sandbox_paths`: 0 read, 1 write, 2 list, 3 remove.
    let ops = |ops: &[(u8, u8, &str)]| -> Vec<u8> {
        let lines: Vec<Vec<u8>> = ops.iter().map(|(op, p, path)| [&[*op, *p], path.as_bytes()].concat()).collect();
        lines.join(&b'\n')
    };
    let resolve_cases = ["/workspace/a/./b//c", "/workspace", "/tmp/x", "rel/y", "/etc/passwd", "/", "/workspacex"];
    let refused = ["/tmpx/y", "a/../b", "/workspace/..", "a\0b", "/tmp/../etc/x.py", "/workspace/../etc"];
    let lexical: Vec<(u8, u8, &str)> = resolve_cases.iter().chain(&refused).map(|p| (2, 0, *p)).collect();
    vec![
        ("lexical-1".to_owned(), ops(&lexical[..7])),
        ("lexical-2".to_owned(), ops(&lexical[7..])),
        ("escapes".to_owned(), ops(&[(0, 64, "abs/secret"), (0, 64, "secret-link"), (2, 0, "up"), (1, 0, "other/x")])),
        (
            "specials".to_owned(),
            ops(&[(0, 16, "/workspace/fifo"), (2, 0, "self/dir"), (3, 1, "abs"), (0, 9, "dir/file")]),
        ),
        (
            "writes".to_owned(),
            ops(&[(1, 2, "/tmp/corral-job/main.sh"), (1, 0x80, "/workspace/a/b/data.txt"), (3, 1, "a")]),
        ),
    ]
}

fn batch_items() -> Vec<Seed> {
    let lines = [
        r#"{"argv": ["python3", "-c", "print(1)"]}"#,
        r#"{"shell": "echo hi | wc -c"}"#,
        r#"{"language": "py", "code": "print(2)"}"#,
        r#"{"shell": "env", "runtime": "docker", "image": "corral/python", "env": {"A": "1"}, "timeout_seconds": 2.5, "cpus": 0.5, "memory_mb": 256, "internet_access": true, "stdin": "data", "labels": {"team": "eval"}}"#,
        r#"{"argv": ["ls", 3]}"#,
        r#"{"shell": "ls", "argv": ["ls"]}"#,
        r#"{"language": "cobol", "code": "x"}"#,
        r#"{"shell": "ls", "timeout_seconds": -1}"#,
        r#"{"shell": "ls", "memory_mb": 1.5}"#,
        r#"{"shell": "ls", "runtime": "qemu"}"#,
        r#"{"shell": "ls", "image": "corral/base"}"#,
        r#"{"shell": "ls", "stdn": "x"}"#,
    ];
    let mut seeds: Vec<Seed> =
        lines.iter().enumerate().map(|(i, l)| (format!("line-{i:02}"), l.as_bytes().to_vec())).collect();
    seeds.push(("blank-lines".into(), b"{\"shell\": \"a\"}\n\n  \n{\"argv\": [\"b\"]}\n".to_vec()));
    seeds.push(("bad-lines".into(), b"{\"shell\": \"ok\"}\n{\"argv\": 1}\n{\"shell\": \"ok\"}\nnope\n".to_vec()));
    seeds.push(("not-objects".into(), b"[1, 2]\n{\"shell\": \n{}\n".to_vec()));
    seeds
}

fn proto_convert() -> Vec<Seed> {
    let seed = |name: &str, kind: u8, msg: &dyn Fn() -> Vec<u8>| (name.to_owned(), [vec![kind], msg()].concat());
    let env = || [("A".to_owned(), "1".to_owned())].into();
    let labels = || [("team".to_owned(), "eval".to_owned())].into();
    let sandbox = "sb-0123456789abcdef0123456789abcdef".to_owned();
    let job = |argv: &[&str], shell: &str| pb::JobSpec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        shell: shell.into(),
        env: env(),
        timeout_seconds: 2.5,
        ..Default::default()
    };
    let code = pb::JobSpec { language: "py".into(), code: "print(2)".into(), ..Default::default() };
    let docker = pb::JobSpec { runtime: pb::Runtime::Docker as i32, image: "corral/python".into(), ..code.clone() };
    vec![
        seed("create", 0, &|| {
            let r = pb::CreateSandboxRequest {
                cpus: 0.5,
                memory_mb: 256,
                env: env(),
                labels: labels(),
                ..Default::default()
            };
            pb::CreateSandboxRequest { name: "web-1".into(), workdir: "/workspace/app/".into(), ..r }.encode_to_vec()
        }),
        seed("create-docker", 0, &|| {
            pb::CreateSandboxRequest { runtime: 2, image: "corral/python".into(), ..Default::default() }.encode_to_vec()
        }),
        seed("submit", 1, &|| {
            pb::SubmitJobRequest { job: Some(job(&["echo", "hi"], "")), idempotency_key: "k-1".into(), retries: 2 }
                .encode_to_vec()
        }),
        seed("submit-code", 1, &|| {
            pb::SubmitJobRequest { job: Some(docker.clone()), ..Default::default() }.encode_to_vec()
        }),
        seed("batch", 2, &|| {
            let items = vec![job(&[], "echo $A"), code.clone(), job(&["true"], "")];
            let r = pb::SubmitBatchRequest { items, max_concurrency: 2, retries_per_item: 1, ..Default::default() };
            pb::SubmitBatchRequest { deadline_seconds: 60.0, labels: labels(), ..r }.encode_to_vec()
        }),
        seed("exec", 3, &|| {
            let r = pb::ExecRequest {
                sandbox_id: sandbox.clone(),
                shell: "ls -l".into(),
                env: env(),
                ..Default::default()
            };
            pb::ExecRequest { cwd: "/tmp".into(), timeout_seconds: 5.0, stdin: b"in".to_vec(), ..r }.encode_to_vec()
        }),
        seed("run-code", 4, &|| {
            let r = pb::RunCodeRequest { sandbox_id: sandbox.clone(), language: "python".into(), ..Default::default() };
            pb::RunCodeRequest { code: "print(1)".into(), cwd: "/workspace".into(), ..r }.encode_to_vec()
        }),
        seed("start-process", 5, &|| {
            let r = pb::StartProcessRequest {
                sandbox_id: sandbox.clone(),
                argv: vec!["sleep".into(), "1".into()],
                ..Default::default()
            };
            r.encode_to_vec()
        }),
        seed("signal", 6, &|| {
            pb::SendSignalRequest { sandbox_id: sandbox.clone(), pid: 1, signal: 15 }.encode_to_vec()
        }),
        seed("set-timeout", 7, &|| {
            pb::SetSandboxTimeoutRequest { id: sandbox.clone(), timeout_seconds: 600 }.encode_to_vec()
        }),
        seed("list-sandboxes", 8, &|| {
            pb::ListSandboxesRequest {
                states: vec![4, 7],
                labels: labels(),
                page_size: 10,
                page_token: sandbox.clone(),
            }
            .encode_to_vec()
        }),
        seed("list-jobs", 9, &|| pb::ListJobsRequest { states: vec![1, 3], ..Default::default() }.encode_to_vec()),
        seed("by-name", 10, &|| pb::GetSandboxByNameRequest { name: "web-1".into() }.encode_to_vec()),
        seed("session-exec", 11, &|| {
            let session_id = "ss-0123456789abcdef0123456789abcdef-0011223344556677".into();
            pb::SessionExecRequest { session_id, command: "cd /tmp && pwd".into(), timeout_seconds: 1.0 }
                .encode_to_vec()
        }),
    ]
}

/// A rule in the CLI form of `core/src/permissions/tests.rs` (`PATTERN=PERM[:TYPE[:PRIORITY]]`),
/// not validated, so that the refused patterns of its tests can be seeds too.
fn cli_rule(s: &str) -> PermissionRule {
    let (pattern, spec) = s.rsplit_once('=').expect("PATTERN=PERM");
    let mut parts = spec.split(':');
    let permission = parts.next().unwrap_or_default().parse().expect("a permission");
    let kind = parts.next().map_or(Ok(Default::default()), str::parse).expect("a pattern type");
    let priority = parts.next().map_or(0, |p| p.parse().expect("a priority"));
    PermissionRule::new(pattern, permission, kind, priority)
}

/// The lines of a `permission_rules` input: an optional preset, rules in the CLI form, paths
/// (`x/` is the directory `x`, as in the permission tests; `""` the root) and symlinks.
fn rules_input(preset: Option<Option<Preset>>, rules: &[&str], paths: &[&str], links: &[(&str, &str)]) -> Vec<u8> {
    use crate::permission_rules::{link_line, path_line, preset_line, rule_line};
    let mut lines: Vec<Vec<u8>> = preset.map(preset_line).into_iter().collect();
    lines.extend(rules.iter().map(|r| rule_line(&cli_rule(r))));
    lines.extend(paths.iter().map(|p| match p.strip_suffix('/') {
        Some(dir) => path_line(dir, true),
        None => path_line(p, p.is_empty()),
    }));
    lines.extend(links.iter().map(|(link, target)| link_line(link, target)));
    lines.join(&b'\n')
}

fn permission_rules() -> Vec<Seed> {
    use crate::permission_rules::{long_path_line, long_rule_line};
    let seed = |name: &str, rules: &[&str], paths: &[&str]| (name.to_owned(), rules_input(None, rules, paths, &[]));
    let preset = |name: &str, p: Preset, rules: &[&str], paths: &[&str]| {
        (name.to_owned(), rules_input(Some(Some(p)), rules, paths, &[]))
    };
    let fixture = ["", "README.md", "src/", ".env", "config/.env.production", "secrets/", "x/secrets/b", "id.key"];
    let fixture2 = ["certs/server.pem", "credentials.json", ".git/", "vendor/lib/.git", "output/", "output/.env"];
    let mut seeds = vec![
        seed(
            "file-rules",
            &["a.txt=read:file", "/a/b.txt=write:file", "a/b.txt=none:file:1", "d/x=none:file", "c/d/e=view:file"],
            &["a/b.txt", "a/", "a", "a/c.txt", "b.txt", "a/b.txt/c", "d/x/", "c/"],
        ),
        seed(
            "file-priorities",
            &["x=read:file:-1", "x=write:file:5", "/x=none:file:5", "y/z=read:file:99", "y/z=none:file:100"],
            &["x", "x/", "y/", "y/z", ""],
        ),
        seed("glob-secrets", &["**/secrets/**=read"], &["secrets/a", "x/secrets/", "secrets", "secretsx/a", "x/y/s/"]),
        seed("glob-anchored", &["/out/**=write"], &["out/", "out", "a/out/x", "", "out/x/y"]),
        seed("glob-double-star", &["a/**/b/**/c=write"], &["a/b/c", "a/1/2/b/3/c", "z/a/b/c", "a/", "a/b/"]),
        seed("glob-any-depth", &["build/=read"], &["build/", "build", "x/build/out.o", "x/"]),
        seed("glob-middle", &["**/x/**/y=read"], &["q/r/", "x/y", "a/x/b/c/y", "a/y"]),
        seed("glob-name", &["/x=view"], &["x", "a/x", "x/", "x/y"]),
        seed("glob-escapes", &[r"\*\*/a\?/b\\/c/=read"], &["**/a?/b\\/c/", "**/a?/b\\/c", "x/**/", "**/ab/"]),
        seed(
            "conflicts",
            &["a/b.txt=none:file", "a/**=write:glob:5", "a=write:directory", "a/b=read:directory", "docs/*.md=read"],
            &["a/b.txt", "a/x", "a/b/c", "docs/x.md", "docs/"],
        ),
        seed(
            "wildcards",
            &["file?.txt=read", "[abc].txt=read", "[!a]x=read", "[]]=read", r"\*.txt=read", r"a\?=view", "*.md=read"],
            &["file1.txt", "file12.txt", "b.txt", "ax", "bx", "]", "*.txt", "a?", "docs/"],
        ),
        seed(
            "hidden-dirs",
            &["secrets/**=none", "secrets/public/**=read", "**/s2/**=none:glob:10", "s2/public/**=read"],
            &["secrets/", "secrets/public/a", "secrets/other/", "s2/", "s2/public/a"],
        ),
        preset("agent-safe", Preset::AgentSafe, &["docs/**=write", "docs/.env=read:file:99"], &fixture),
        preset(
            "agent-safe-regrant",
            Preset::AgentSafe,
            &["/.git/HEAD=read:file:200", "docs/.env=read:file:100"],
            &[".git/", ".git/HEAD", ".git/config", "docs/.env", "docs/"],
        ),
        preset("development", Preset::Development, &["tmp/**=none"], &fixture2),
        preset("view-only", Preset::ViewOnly, &["a=write:directory"], &["a/b", "b/", ""]),
        preset("read-only", Preset::ReadOnly, &[], &["README.md", "src/"]),
        preset("full-access", Preset::FullAccess, &["*.key=none:glob:1"], &["id.key", "x/"]),
        preset("preset-refused", Preset::AgentSafe, &["ok=read", "[z-a]=read"], &["ok"]),
    ];
    // `validation_errors_name_the_rule`: a refused rule after two good ones, then another.
    let refused = [
        "=read",
        "a/../b=read",
        "..=read:directory",
        "./a=read:file",
        "a\0b=read",
        "[abc=read",
        "a/[b/c]=read",
        "[[:alpha:]]=read",
        "[z-a]=read",
        r"a\=read",
        "a//b=read",
        "a*=read:file",
        "src/[x]=read:directory",
        "a/=read:file",
        "/=read:directory",
        "/=read",
    ];
    for (i, bad) in refused.iter().enumerate() {
        seeds.push(seed(&format!("refused-{i:02}"), &["ok=read", "ok=read", bad, "b=write"], &["ok"]));
    }
    let longest = |n: usize| format!("{}=read", "x".repeat(n));
    let limit = [longest(corral_core::permissions::MAX_PATTERN_BYTES), longest(4097)];
    seeds.push(seed("pattern-limit", &[&limit[0]], &["x"]));
    seeds.push(seed("pattern-over-limit", &[&limit[1]], &["x"]));
    // `core/src/codebase.rs`'s tests, and paths past the length limits.
    let ok_paths = ["a", "a/b.txt", ".env", "a/.git/config", "..a", "a..b/c"];
    let bad_paths = ["", "/a", "a//b", "a/", "./a", "a/../b", "..", "a/\0"];
    seeds.push(("codebase-paths".into(), rules_input(None, &[], &ok_paths, &[])));
    let bad: Vec<Vec<u8>> = bad_paths.iter().map(|p| crate::permission_rules::path_line(p, false)).collect();
    seeds.push(("codebase-bad-paths".into(), bad.join(&b'\n')));
    let links_ok = [("a/b/link", "../c"), ("a/link", "b/../c"), ("link", "a/b"), ("a/b/l", "./../../c/.")];
    let links_bad = [("link", "../x"), ("a/link", "../../x"), ("a/link", "/etc/passwd"), ("a/link", "b/../../../x")];
    seeds.push(("links".into(), rules_input(None, &[], &[], &links_ok)));
    seeds.push(("links-leaving".into(), rules_input(None, &[], &[], &links_bad)));
    let long = [
        long_path_line("abcdefghijklmnop/", 255, false),
        long_path_line("x", 255, false),
        long_path_line("a/", 255, true),
    ];
    seeds.push(("long-paths".into(), long.join(&b'\n')));
    // Patterns that would blow up a backtracking matcher, on long paths (`many_double_stars_are_cheap`).
    let stars = [
        long_rule_line(&cli_rule("**/a/=read"), 119),
        rule_line_of("b=write"),
        long_path_line("a/", 200, true),
        long_path_line("a/", 200, false),
    ];
    seeds.push(("many-double-stars".into(), stars.join(&b'\n')));
    let wild = [
        long_rule_line(&cli_rule("*a=read"), 150),
        long_rule_line(&cli_rule("a*=none:glob:1"), 100),
        long_path_line("a", 250, false),
        long_path_line("aaab/", 120, true),
    ];
    seeds.push(("many-stars".into(), wild.join(&b'\n')));
    seeds
}

fn rule_line_of(cli: &str) -> Vec<u8> {
    crate::permission_rules::rule_line(&cli_rule(cli))
}
