//! The seed corpus (`fuzz/corpus/<target>/<name>`), made from the inputs of the project's own
//! tests: the frames of `init/src/protocol.rs`'s tests, the paths of `init/src/files.rs`'s and
//! the runtime conformance suite's, the lines of `cli/src/batch_items.rs`'s, and requests like
//! the coordinator's tests send. `corral-fuzz-seeds` writes them; `tests/corpus.rs` checks the
//! committed files are what this module makes.

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
