"""Disk quotas through the SDK, against corral dev (root there, so its agent enforces them)."""

from __future__ import annotations

import pytest

from corral import AsyncSandbox, DiskUsage, InvalidArgumentError


async def test_disk_mb_limits_the_workspace_and_info_reports_the_use(labels: dict[str, str]) -> None:
    async with await AsyncSandbox.create(labels=labels, memory_mb=64, disk_mb=16) as sb:
        info = await sb.info()
        assert info.disk_mb == 16
        assert isinstance(info.disk_usage, DiskUsage), "corral dev runs as root: quotas are on"
        assert 12 << 20 <= info.disk_usage.total_bytes <= 16 << 20
        full = await sb.run("head -c 100000000 /dev/zero > /workspace/fill")
        assert full.exit_code != 0 and "No space left on device" in full.stderr
        after = await sb.info()
        assert after.disk_usage is not None and after.disk_usage.used_bytes > 8 << 20
        alive = await sb.run("rm /workspace/fill && echo alive")
        assert alive.stdout == "alive\n"


async def test_disk_mb_out_of_range_names_the_field(labels: dict[str, str]) -> None:
    with pytest.raises(InvalidArgumentError, match="disk_mb"):
        await AsyncSandbox.create(labels=labels, memory_mb=64, disk_mb=1)
