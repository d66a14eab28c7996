"""Codebase calls against an in-process fake coordinator (no ``corral dev``): the Upload stream
as a server receives it (content sent once, the rest by reference, a second upload sending
nothing), a server that ends the stream early, hygiene errors before any call, downloads to
memory and disk, file listing pages, and ``from_local`` / ``from_codebase`` requests (fields,
cleanup of the codebase when the create fails)."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Optional

import blake3
import grpc
import grpc.aio
import pytest

from corral import AsyncSandbox, AsyncSandboxClient, InvalidArgumentError, Permission, PermissionRule, UploadError
from corral.v1 import codebase_pb2, codebase_pb2_grpc, sandbox_pb2, sandbox_pb2_grpc

pytestmark = pytest.mark.unit

CB_ID = "cb-" + "a" * 32


class FakeCodebases(codebase_pb2_grpc.CodebaseServiceServicer):
    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}
        self.tree: dict[str, codebase_pb2.CodebaseFile] = {}
        self.asked: list[int] = []
        self.uploads = 0
        self.created: list[codebase_pb2.CreateCodebaseRequest] = []
        self.deleted: list[str] = []
        self.refuse_path: Optional[str] = None

    def record(self) -> codebase_pb2.Codebase:
        files = [f for f in self.tree.values() if f.kind == codebase_pb2.FILE_KIND_REGULAR]
        return codebase_pb2.Codebase(
            id=CB_ID, name="fake", file_count=len(files), size_bytes=sum(f.size for f in files), digest="d" * 64
        )

    async def Create(self, request: Any, context: Any) -> codebase_pb2.CreateCodebaseResponse:
        self.created.append(request)
        return codebase_pb2.CreateCodebaseResponse(codebase=codebase_pb2.Codebase(id=CB_ID, name=request.name))

    async def Delete(self, request: Any, context: Any) -> codebase_pb2.DeleteCodebaseResponse:
        self.deleted.append(request.id)
        return codebase_pb2.DeleteCodebaseResponse(codebase=self.record())

    async def MissingContent(self, request: Any, context: Any) -> codebase_pb2.MissingContentResponse:
        self.asked.append(len(request.digests))
        return codebase_pb2.MissingContentResponse(digests=[d for d in request.digests if d not in self.store])

    async def Upload(self, request_iterator: Any, context: Any) -> codebase_pb2.UploadResponse:
        self.uploads += 1
        it = request_iterator.__aiter__()
        first = await it.__anext__()
        assert first.WhichOneof("item") == "start" and first.start.codebase_id == CB_ID
        tree: dict[str, codebase_pb2.CodebaseFile] = {}
        received = dedup = 0
        header: Optional[codebase_pb2.UploadFile] = None
        body = b""

        async def finish() -> None:
            nonlocal dedup
            if header is None:
                return
            f = header
            if f.kind == codebase_pb2.FILE_KIND_REGULAR:
                if f.by_reference:
                    if f.digest not in self.store:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{f.path}: unknown content")
                    dedup += f.size
                else:
                    if len(body) != f.size:
                        await context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT, f"{f.path}: {f.size} bytes declared, {len(body)} received"
                        )
                    assert blake3.blake3(body).hexdigest() == f.digest
                    self.store[f.digest] = body
            tree[f.path] = codebase_pb2.CodebaseFile(
                path=f.path, kind=f.kind, mode=f.mode, size=f.size, digest=f.digest, link_target=f.link_target
            )

        n = 0
        async for m in it:
            if m.WhichOneof("item") == "file":
                await finish()
                header, body = m.file, b""
                if m.file.path == self.refuse_path:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"file[{n}].path: refused by the fake")
                n += 1
            else:
                assert m.WhichOneof("item") == "data" and len(m.data) <= 1 << 20
                body += m.data
                received += len(m.data)
        await finish()
        self.tree = tree
        return codebase_pb2.UploadResponse(
            codebase=self.record(), files_received=len(tree), bytes_received=received, bytes_deduplicated=dedup
        )

    async def ListFiles(self, request: Any, context: Any) -> codebase_pb2.ListCodebaseFilesResponse:
        under = request.prefix.rstrip("/") + "/" if request.prefix else ""
        paths = [p for p in sorted(self.tree) if p.startswith(under) and p > request.page_token]
        size = request.page_size or 1000
        page = paths[:size]
        nxt = page[-1] if len(paths) > size else ""
        return codebase_pb2.ListCodebaseFilesResponse(files=[self.tree[p] for p in page], next_page_token=nxt)

    async def Download(self, request: Any, context: Any) -> AsyncIterator[codebase_pb2.DownloadChunk]:
        f = self.tree.get(request.path)
        if f is not None and f.kind == codebase_pb2.FILE_KIND_REGULAR:
            body = self.store[f.digest]
            yield codebase_pb2.DownloadChunk(header=codebase_pb2.DownloadHeader(format="file", size=len(body)))
            for i in range(0, len(body), 7):
                yield codebase_pb2.DownloadChunk(data=body[i : i + 7])
            return
        under = request.path + "/" if request.path else ""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in sorted(p for p in self.tree if p.startswith(under)):
                e = self.tree[path]
                info = tarfile.TarInfo(path[len(under) :])
                info.mode = e.mode
                if e.kind == codebase_pb2.FILE_KIND_DIRECTORY:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif e.kind == codebase_pb2.FILE_KIND_SYMLINK:
                    info.type, info.linkname = tarfile.SYMTYPE, e.link_target
                    tar.addfile(info)
                else:
                    info.size = e.size
                    tar.addfile(info, io.BytesIO(self.store[e.digest]))
        yield codebase_pb2.DownloadChunk(header=codebase_pb2.DownloadHeader(format="tar", size=-1))
        raw = buf.getvalue()
        for i in range(0, len(raw), 1000):
            yield codebase_pb2.DownloadChunk(data=raw[i : i + 1000])


class FakeSandboxes(sandbox_pb2_grpc.SandboxesServicer):
    def __init__(self) -> None:
        self.creates: list[sandbox_pb2.CreateSandboxRequest] = []
        self.destroyed: list[str] = []

    async def Create(self, request: Any, context: Any) -> sandbox_pb2.CreateSandboxResponse:
        self.creates.append(request)
        if any(r.pattern == "[bad" for r in request.permissions):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, 'permissions[0]: "[bad": unclosed class')
        sb = sandbox_pb2.Sandbox(
            id="sb-" + "b" * 32,
            state=sandbox_pb2.SANDBOX_STATE_RUNNING,
            labels=request.labels,
            codebase_id=request.codebase_id,
            preset=request.preset or ("read-only" if not request.permissions else ""),
            permissions=request.permissions,
            codebase_path=request.codebase_path or "/workspace",
        )
        return sandbox_pb2.CreateSandboxResponse(sandbox=sb)

    async def Destroy(self, request: Any, context: Any) -> sandbox_pb2.DestroySandboxResponse:
        self.destroyed.append(request.id)
        return sandbox_pb2.DestroySandboxResponse(
            sandbox=sandbox_pb2.Sandbox(id=request.id, state=sandbox_pb2.SANDBOX_STATE_STOPPED)
        )

    async def Diff(self, request: Any, context: Any) -> sandbox_pb2.DiffSandboxResponse:
        return sandbox_pb2.DiffSandboxResponse(
            changes=[sandbox_pb2.Change(path="output/x", kind=sandbox_pb2.CHANGE_KIND_ADDED, file_kind=1, size=2)]
        )


@pytest.fixture
async def fake() -> AsyncIterator[tuple[str, FakeCodebases, FakeSandboxes]]:
    codebases, sandboxes = FakeCodebases(), FakeSandboxes()
    server = grpc.aio.server()
    codebase_pb2_grpc.add_CodebaseServiceServicer_to_server(codebases, server)
    sandbox_pb2_grpc.add_SandboxesServicer_to_server(sandboxes, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", codebases, sandboxes
    finally:
        await server.stop(None)


def project(root: Path) -> None:
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('hello')\n")
    (root / "src" / "same.py").write_text("print('hello')\n")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (root / "empty").write_text("")
    (root / "output").mkdir()
    (root / ".env").write_text("SECRET=1\n")
    os.symlink("src/main.py", root / "link.py")


async def test_upload_sends_content_once_then_nothing(fake: Any, tmp_path: Path) -> None:
    endpoint, codebases, _ = fake
    project(tmp_path)
    seen: list[tuple[int, int, int, int]] = []
    async with AsyncSandboxClient(endpoint) as client:
        first = await client.upload_codebase(CB_ID, tmp_path, progress=lambda *a: seen.append(a))
        assert sorted(codebases.tree) == ["big.bin", "empty", "link.py", "output", "src", "src/main.py", "src/same.py"]
        size = (tmp_path / "big.bin").stat().st_size + 15
        assert (first.files_received, first.bytes_received, first.bytes_deduplicated) == (7, size, 15)
        assert first.codebase.file_count == 4 and first.codebase.id == CB_ID
        assert seen[-1] == (7, 7, size + 15, size + 15)
        again = await client.upload_codebase(CB_ID, tmp_path)
        assert (again.bytes_received, again.bytes_deduplicated) == (0, size + 15)
        with_secrets = await client.upload_codebase(CB_ID, tmp_path, include_secrets=True)
        assert ".env" in codebases.tree and with_secrets.bytes_received == len("SECRET=1\n")
    assert codebases.asked == [2, 2, 3] and codebases.uploads == 3


async def test_a_server_refusal_mid_stream_is_raised(fake: Any, tmp_path: Path) -> None:
    endpoint, codebases, _ = fake
    project(tmp_path)
    codebases.refuse_path = "output"
    async with AsyncSandboxClient(endpoint) as client:
        with pytest.raises(InvalidArgumentError, match=r"file\[3\]\.path: refused by the fake"):
            await client.upload_codebase(CB_ID, tmp_path)
    assert codebases.tree == {}


async def test_hygiene_errors_come_before_any_call(fake: Any, tmp_path: Path) -> None:
    endpoint, codebases, sandboxes = fake
    project(tmp_path)
    os.mkfifo(tmp_path / "src" / "pipe")
    async with AsyncSandboxClient(endpoint) as client:
        with pytest.raises(UploadError, match=r"^src/pipe: is a device, fifo or socket"):
            await client.upload_codebase(CB_ID, tmp_path)
        with pytest.raises(UploadError, match="src/pipe"):
            await AsyncSandbox.from_local(tmp_path, preset="agent-safe", client=client)
    assert codebases.asked == [] and codebases.uploads == 0 and codebases.created == [] and sandboxes.creates == []


async def test_downloads_to_memory_and_disk(fake: Any, tmp_path: Path) -> None:
    endpoint, _, _ = fake
    src = tmp_path / "src-tree"
    project(src)
    async with AsyncSandboxClient(endpoint) as client:
        await client.upload_codebase(CB_ID, src)
        assert await client.download_codebase(CB_ID, "src/main.py") == b"print('hello')\n"
        tar_bytes = await client.download_codebase(CB_ID, "src")
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            assert sorted(tar.getnames()) == ["main.py", "same.py"]
        out = tmp_path / "out"
        written = await client.download_codebase_to(CB_ID, "", out)
        assert sorted(p.relative_to(out).as_posix() for p in written) == sorted(
            ["big.bin", "empty", "link.py", "output", "src", "src/main.py", "src/same.py"]
        )
        assert (out / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
        assert os.readlink(out / "link.py") == "src/main.py" and (out / "output").is_dir()
        (tmp_path / "one").mkdir()
        [one] = await client.download_codebase_to(CB_ID, "src/main.py", tmp_path / "one")
        assert one == tmp_path / "one" / "main.py" and one.read_text() == "print('hello')\n"
        [renamed] = await client.download_codebase_to(CB_ID, "src/main.py", tmp_path / "new" / "m.py")
        assert renamed.read_text() == "print('hello')\n"
        files = [f async for f in client.iter_codebase_files(CB_ID, page_size=2)]
        assert [f.path for f in files] == sorted(
            ["big.bin", "empty", "link.py", "output", "src", "src/main.py", "src/same.py"]
        )
        page = await client.list_codebase_files(CB_ID, "src")
        assert [f.path for f in page.files] == ["src/main.py", "src/same.py"] and page.next_page_token == ""
        assert page.files[0].is_file and page.files[0].digest == blake3.blake3(b"print('hello')\n").hexdigest()


async def test_from_local_and_from_codebase_requests(fake: Any, tmp_path: Path) -> None:
    endpoint, codebases, sandboxes = fake
    project(tmp_path / "my-proj")
    sb = await AsyncSandbox.from_local(
        tmp_path / "my-proj",
        preset="agent-safe",
        permissions=["docs/**=write", {"pattern": "notes.txt", "permission": "view", "type": "file"}],
        labels={"t": "1"},
        endpoint=endpoint,
        memory_mb=64,
    )
    try:
        [made] = codebases.created
        assert made.name == "my-proj" and dict(made.labels) == {"t": "1"}
        req = sandboxes.creates[-1]
        assert (req.codebase_id, req.preset, req.codebase_path, req.memory_mb) == (
            CB_ID,
            "agent-safe",
            "/workspace",
            64,
        )
        assert [PermissionRule.from_pb(r) for r in req.permissions] == [
            PermissionRule("docs/**", Permission.WRITE),
            PermissionRule("notes.txt", Permission.VIEW, "file"),
        ]
        assert sb.codebase_id == CB_ID and sb.preset == "agent-safe"
        assert sb.upload_result is not None and sb.upload_result.files_received == 7
        assert (await sb.diff()).added == ["output/x"]
    finally:
        await sb.destroy()
    other = await AsyncSandbox.from_codebase(CB_ID, endpoint=endpoint, codebase_path="/mnt/code")
    req = sandboxes.creates[-1]
    assert (req.codebase_id, req.preset, list(req.permissions), req.codebase_path) == (CB_ID, "", [], "/mnt/code")
    assert other.preset == "read-only"
    await other.destroy()
    assert codebases.deleted == []


async def test_from_local_deletes_its_codebase_when_the_create_fails(fake: Any, tmp_path: Path) -> None:
    endpoint, codebases, sandboxes = fake
    project(tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"permissions\[0\]"):
        await AsyncSandbox.from_local(tmp_path, permissions=["[bad=read"], endpoint=endpoint, codebase_name="n")
    assert [c.name for c in codebases.created] == ["n"] and codebases.deleted == [CB_ID]
    assert len(sandboxes.creates) == 1


async def test_codebase_mode_is_chosen_by_rules_or_explicitly(fake: Any, tmp_path: Path) -> None:
    endpoint, codebases, sandboxes = fake
    project(tmp_path)
    sb = await AsyncSandbox.from_local(tmp_path, codebase=True, endpoint=endpoint, remote_path="/mnt/p")
    req = sandboxes.creates[-1]
    assert (req.codebase_id, req.preset, req.codebase_path) == (CB_ID, "", "/mnt/p")
    assert sb.preset == "read-only"
    await sb.destroy()
