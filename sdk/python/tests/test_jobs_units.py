"""Client-side pieces of jobs and batches: specs from arguments and batch items, result objects."""

from __future__ import annotations

import datetime as dt

import pytest

import corral
from corral import BatchInfo, BatchStatus, InvalidArgumentError, JobInfo, JobStatus, JobTimeoutError
from corral._client_jobs import item_spec, job_spec, job_states
from corral.v1 import jobs_pb2


def test_job_spec_needs_exactly_one_command() -> None:
    spec = job_spec(language="python", code="print(1)", env={"A": 1}, timeout=2.5, memory_mb=64, runtime="bwrap")
    assert (spec.language, spec.code, dict(spec.env), spec.timeout_seconds) == ("python", "print(1)", {"A": "1"}, 2.5)
    assert spec.memory_mb == 64 and spec.runtime == corral.RuntimeType.BWRAP.to_pb()
    assert list(job_spec(argv=["echo", 1]).argv) == ["echo", "1"]
    assert job_spec(shell="echo hi", stdin="x").stdin == b"x"
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        job_spec(shell="a", argv=["b"])
    with pytest.raises(InvalidArgumentError, match="exactly one .*none"):
        job_spec()
    with pytest.raises(InvalidArgumentError, match="language"):
        job_spec(code="print(1)")
    with pytest.raises(InvalidArgumentError, match="language"):
        job_spec(shell="echo", language="bash")
    with pytest.raises(InvalidArgumentError, match="argv"):
        job_spec(argv="echo hi")
    with pytest.raises(InvalidArgumentError, match="timeout"):
        job_spec(shell="true", timeout=-1)
    assert job_spec(shell="true", timeout=dt.timedelta(minutes=1)).timeout_seconds == 60


def test_batch_items_of_every_form() -> None:
    assert item_spec(0, "echo a").shell == "echo a"
    assert list(item_spec(0, ["echo", "b"]).argv) == ["echo", "b"]
    assert item_spec(0, {"command": "echo c", "timeout": 5}).shell == "echo c"
    assert list(item_spec(0, {"command": ["echo", "d"]}).argv) == ["echo", "d"]
    code = item_spec(0, {"code": "print(1)", "language": "py", "env": {"K": "v"}})
    assert (code.code, code.language, dict(code.env)) == ("print(1)", "py", {"K": "v"})
    raw = jobs_pb2.JobSpec(shell="x")
    assert item_spec(0, raw) is raw
    with pytest.raises(InvalidArgumentError, match=r"items\[3\]: unknown key 'cwd'"):
        item_spec(3, {"shell": "pwd", "cwd": "/"})
    with pytest.raises(InvalidArgumentError, match=r"items\[1\]: .*language"):
        item_spec(1, {"code": "print(1)"})
    with pytest.raises(InvalidArgumentError, match=r"items\[2\]: give command or shell"):
        item_spec(2, {"command": "a", "shell": "b"})
    with pytest.raises(InvalidArgumentError, match=r"items\[0\]: expected a str"):
        item_spec(0, 42)  # type: ignore[arg-type]


def test_run_batch_checks_items_before_sending() -> None:
    # No server call happens: the endpoint is unreachable and the error is the item's.
    with pytest.raises(InvalidArgumentError, match=r"items\[1\]"):
        corral.run_batch(["true", {"nope": 1}], endpoint="127.0.0.1:1")
    with pytest.raises(InvalidArgumentError, match="max_concurrency"):
        corral.run_batch(["true"], max_concurrency=0, endpoint="127.0.0.1:1")
    with pytest.raises(InvalidArgumentError, match="retries_per_item"):
        corral.run_batch(["true"], retries_per_item=-1, endpoint="127.0.0.1:1")


def test_job_status_names() -> None:
    for s in JobStatus:
        assert JobStatus.from_pb(s.to_pb()) is s
    assert JobStatus.parse("JOB_STATE_COMPLETED") is JobStatus.COMPLETED
    assert JobStatus.parse("canceled") is JobStatus.CANCELLED and JobStatus.TIMEOUT == "timeout"
    assert [s for s in JobStatus if s.is_terminal] == ["completed", "failed", "timeout", "cancelled", "lost"]
    assert job_states(["running", JobStatus.PENDING]) == [2, 1] and job_states(None) == []
    with pytest.raises(InvalidArgumentError, match="unknown job status"):
        JobStatus.parse("exploded")


def test_job_info_has_the_unsandbox_keys() -> None:
    pb = jobs_pb2.Job(id="job-1", state=jobs_pb2.JOB_STATE_COMPLETED, batch_id="b-1", index=4, created_at_ms=1000)
    pb.spec.language = "python"
    pb.result.stdout = b"42\n"
    pb.result.exit_code = 0
    job = JobInfo.from_pb(pb)
    assert {k: job[k] for k in ("job_id", "status", "stdout", "stderr", "exit_code", "language")} == {
        "job_id": "job-1",
        "status": "completed",
        "stdout": "42\n",
        "stderr": "",
        "exit_code": 0,
        "language": "python",
    }
    assert job["id"] == job.id == "job-1" and job.state is JobStatus.COMPLETED and job["done"]
    assert job.success and not job.timed_out and (job.batch_id, job.index) == ("b-1", 4)
    assert job.created_at == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)
    assert job.to_dict()["status"] == "completed"
    pending = JobInfo.from_pb(jobs_pb2.Job(id="job-2", state=jobs_pb2.JOB_STATE_PENDING, queue_position=3))
    assert pending.exit_code is None and not pending.done and pending.queue_position == 3
    full = job.with_output(b"all of it", b"", truncated=True)
    assert (full.stdout, full.stdout_bytes, full.truncated, full.output_clipped) == (
        "all of it",
        b"all of it",
        True,
        False,
    )


def test_batch_info_and_timeout_error() -> None:
    pb = jobs_pb2.Batch(id="b-1", state=jobs_pb2.BATCH_STATE_CANCELLED, total=3, reason="deadline passed")
    pb.counts.completed, pb.counts.cancelled = 1, 2
    b = BatchInfo.from_pb(pb)
    assert (b["id"], b.status, b.counts.finished, b.counts["cancelled"]) == ("b-1", BatchStatus.CANCELLED, 3, 2)
    err = JobTimeoutError("late", "job-9")
    assert isinstance(err, corral.SandboxTimeoutError) and isinstance(err, TimeoutError)
    assert err.job_id == "job-9" and err.code_name == "DEADLINE_EXCEEDED"
