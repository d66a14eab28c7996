#!/usr/bin/env python3
"""Fan-out benchmark: N concurrent ``create → run("echo done") → destroy`` from one asyncio
process, against a running coordinator (``corral dev``).

    python sdk/python/bench/fanout.py --endpoint 127.0.0.1:50051 -n 100 --rounds 3

Prints, per round, the wall time and per-phase latency percentiles, then the client's peak RSS
(``resource.getrusage``; ru_maxrss is in KiB on Linux). With ``--json`` the summary is one JSON
object. Exits non-zero if any sandbox failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
import uuid

from corral import AsyncSandbox, AsyncSandboxClient, SandboxStatus


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return 0.0
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


async def one(client: AsyncSandboxClient, labels: dict[str, str], memory_mb: int) -> dict[str, float]:
    t0 = time.perf_counter()
    sb = await AsyncSandbox.create(client=client, labels=labels, memory_mb=memory_mb)
    t1 = time.perf_counter()
    try:
        r = await sb.run("echo done")
        if r.stdout != "done\n" or r.exit_code != 0:
            raise RuntimeError(f"unexpected result {r!r}")
        t2 = time.perf_counter()
    finally:
        await sb.destroy()
    t3 = time.perf_counter()
    return {"create": t1 - t0, "run": t2 - t1, "destroy": t3 - t2, "total": t3 - t0}


async def round_(client: AsyncSandboxClient, n: int, memory_mb: int) -> dict[str, object]:
    labels = {"bench": "sdk-python-fanout", "run": uuid.uuid4().hex[:12]}
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(client, labels, memory_mb) for _ in range(n)), return_exceptions=True)
    wall = time.perf_counter() - t0
    ok = [r for r in results if isinstance(r, dict)]
    errors = [repr(r) for r in results if not isinstance(r, dict)]
    live = await AsyncSandbox.list(status=SandboxStatus.RUNNING, labels=labels, client=client)
    phases = {
        ph: {
            "p50_ms": round(1000 * statistics.median([r[ph] for r in ok]), 1) if ok else None,
            "p99_ms": round(1000 * pct([r[ph] for r in ok], 99), 1) if ok else None,
        }
        for ph in ("create", "run", "destroy", "total")
    }
    return {"wall_s": round(wall, 3), "ok": len(ok), "errors": errors[:5], "left_running": len(live), "phases": phases}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--endpoint", default=None, help="coordinator (default: CORRAL_ENDPOINT / config / 127.0.0.1:50051)"
    )
    ap.add_argument("-n", type=int, default=100, help="concurrent sandboxes per round (100)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory-mb", type=int, default=64, help="memory limit per sandbox (64)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rounds = []
    async with AsyncSandboxClient(args.endpoint) as client:
        await client.wait_ready()
        for i in range(args.rounds):
            r = await round_(client, args.n, args.memory_mb)
            rounds.append(r)
            if not args.json:
                ph = r["phases"]
                print(
                    f"round {i + 1}: {args.n} × create→run→destroy in {r['wall_s']:.3f} s "
                    f"(ok {r['ok']}, left running {r['left_running']}); "
                    + ", ".join(f"{k} p50 {v['p50_ms']} ms p99 {v['p99_ms']} ms" for k, v in ph.items()),
                    flush=True,
                )
                for e in r["errors"]:
                    print("  error:", e)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = usage.ru_maxrss / 1024
    walls = [r["wall_s"] for r in rounds]
    summary = {
        "n": args.n,
        "rounds": rounds,
        "wall_s_best": min(walls),
        "wall_s_median": statistics.median(walls),
        "client_peak_rss_mb": round(peak_mb, 1),
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wall: best {summary['wall_s_best']:.3f} s, median {summary['wall_s_median']:.3f} s; "
            f"client peak RSS {summary['client_peak_rss_mb']} MB, client CPU {summary['client_cpu_s']} s in total"
        )
    failed = any(r["ok"] != args.n or r["left_running"] for r in rounds)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
