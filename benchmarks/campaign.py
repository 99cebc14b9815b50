"""Scenario 6, "campaign": ``enkash-coins bulk`` as a user runs it, against ``serve`` in its own process.

Every run is a fresh process: the CLI through ``benchmarks._launch`` (which reports its
own peak RSS), ``allocate_many`` through ``benchmarks._many``. The fake server runs
pinned to the other core; the client processes inherit the benchmark's core 0. While the
CLI runs, the journal's ``-wal`` file is polled every 0.2 s for its peak size; after it,
rows/s come from the journal's ``updated`` column (one completion time per row).

Parts:

* side by side: the CLI and ``allocate_many`` on the same number of rows (fresh user
  ids each run), same server process, same concurrency, interleaved in alternating order;
* ``--dry-run`` of a large file: time and peak RSS;
* ``--rate 200``: the rate the journal's timestamps show;
* ``serve --rate-limit 300``, concurrency 64, no ``--rate``: rows unknown, the share of
  requests answered 429 (from the server's request log), rows/s against 300/s.

``python -m benchmarks.campaign --rows N [--profile FILE.prof]`` runs one CLI campaign
alone (optionally under cProfile), to look for hot spots.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMPANY = "BENCH_CO"
EVENT = "DIWALI_BONUS"
ALLOCATE = "/api/v0/enkash-coins/allocate-coin"
POLL = 0.2  # seconds between two looks at the -wal file
CONCURRENCY = 64
MB = 1024 * 1024

#: The issue's targets (a 2-core machine; the size targets are for 1,000,000 rows).
TARGETS = {
    "peak_rss_mb": 150.0, "wal_peak_mb": 64.0, "last_vs_first": 0.9, "cli_vs_many": 0.8,
    "dry_run_s": 10.0, "dry_run_rss_mb": 100.0, "rate_error": 0.05,
    "limited_unknown": 0, "limited_429_share": 0.05, "limited_vs_limit": 0.8,
}


# -- measuring -----------------------------------------------------------------------

def window_rates(times: Sequence[float]) -> dict[str, Any]:
    """Rows/s from sorted completion times: between first and last, in the first and the last 10%."""
    n = len(times)
    if n < 2:
        return {"span_s": 0.0, "send_rps": 0.0, "first10_rps": 0.0, "last10_rps": 0.0}
    k = max(1, n // 10)
    span = times[-1] - times[0]

    def rate(count: int, seconds: float) -> float:
        return count / max(seconds, 1e-6)

    return {"span_s": round(span, 3), "send_rps": rate(n - 1, span),
            "first10_rps": rate(k, times[k] - times[0]), "last10_rps": rate(k, times[-1] - times[-1 - k]),
            "first10_window": [times[0], times[k]], "last10_window": [times[-1 - k], times[-1]], "window_rows": k}


def curve(times: Sequence[float], points: int = 50) -> list[float]:
    """Rows/s in ``points`` equal slices of the time between first and last completion (for the plot)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return []
    t0, width = times[0], (times[-1] - times[0]) / points
    counts = [0] * points
    for t in times:
        counts[min(int((t - t0) / width), points - 1)] += 1
    return [round(c / width, 1) for c in counts]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_busy() -> float:
    """CPU seconds all processes spent busy, summed over every core, since boot (Linux; 0 elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Watch:
    """Who else used the CPUs while one run went on: the machine's busy time minus our client's and server's."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.load = os.getloadavg()[0]
        self.busy, self.server_cpu, self.wall = _machine_busy(), server.cpu(), time.perf_counter()

    def result(self, client_cpu: float) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        server_cpu = self.server.cpu() - self.server_cpu
        others = max(0.0, _machine_busy() - self.busy - server_cpu - client_cpu)
        return {"server_cpu_s": round(server_cpu, 2), "others_cpu_s": round(others, 2),
                "others_share": round(others / max(wall * (os.cpu_count() or 1), 1e-9), 3),
                "load_before": self.load, "load_after": os.getloadavg()[0]}


def _supervise(proc: subprocess.Popen[Any], server: Server, timeout: float, what: str,
               tick: Any = None) -> list[tuple[float, float, float, float]]:
    """Wait for ``proc``, looking every 0.2 s; the samples (time, machine busy, client CPU, server CPU)."""
    samples: list[tuple[float, float, float, float]] = []
    started = time.perf_counter()
    while proc.poll() is None:
        samples.append((time.time(), _machine_busy(), _cpu_seconds(proc.pid), server.cpu()))
        if tick is not None:
            tick()
        if time.perf_counter() - started > timeout:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{what} ran longer than {timeout:.0f} s")
        time.sleep(POLL)
    return samples


def _at(samples: list[tuple[float, float, float, float]], when: float) -> tuple[float, float, float]:
    """The three counters at ``when``, interpolated between the samples around it."""
    before = max((s for s in samples if s[0] <= when), default=samples[0], key=lambda s: s[0])
    after = min((s for s in samples if s[0] >= when), default=samples[-1], key=lambda s: s[0])
    if after[0] <= before[0]:
        return before[1], before[2], before[3]
    f = (when - before[0]) / (after[0] - before[0])
    return tuple(b + f * (a - b) for a, b in zip(after[1:], before[1:], strict=True))  # type: ignore[return-value]


def window_costs(samples: list[tuple[float, float, float, float]], result: dict[str, Any]) -> dict[str, Any]:
    """For the first and the last 10%: the client's and server's CPU per row, and others' share of the CPUs.

    Tells a slowdown of the client (its CPU per row grows) from other processes taking the cores.
    """
    out: dict[str, Any] = {}
    k = result.get("window_rows", 0)
    if len(samples) < 2 or not k:
        return out
    cpus = os.cpu_count() or 1
    for name in ("first10", "last10"):
        a, b = result[f"{name}_window"]
        (busy_a, client_a, server_a), (busy_b, client_b, server_b) = _at(samples, a), _at(samples, b)
        seconds = max(b - a, 1e-9)
        client, server = client_b - client_a, server_b - server_a
        out[f"{name}_client_us_per_row"] = round(client / k * 1e6, 1)
        out[f"{name}_server_us_per_row"] = round(server / k * 1e6, 1)
        out[f"{name}_others_share"] = round(max(0.0, busy_b - busy_a - client - server) / (seconds * cpus), 3)
    return out


def write_csv(path: Path, n: int, prefix: str) -> Path:
    """``n`` rows, one event, every user id unique."""
    with path.open("w", newline="") as f:
        f.write("user_id,event\n")
        for start in range(0, n, 100_000):
            f.writelines(f"{prefix}{i:08d},{EVENT}\n" for i in range(start, min(n, start + 100_000)))
    return path


def _remove(*paths: Path) -> None:
    for path in paths:
        for suffix in ("", ".journal.sqlite", ".journal.sqlite-wal", ".journal.sqlite-shm",
                       ".journal.sqlite.lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")


# -- the server --------------------------------------------------------------------

class Server:
    def __init__(self, base_url: str, token: str, proc: subprocess.Popen[str], state: Path) -> None:
        self.base_url, self.token, self.proc, self.state = base_url, token, proc, state

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENKASH_")}
        return {**env, "ENKASH_BASE_URL": self.base_url, "ENKASH_TOKEN": self.token,
                "ENKASH_STATE_DIR": str(self.state)}

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.base_url}/_fake/requests", timeout=60) as response:
            return list(json.load(response)["requests"])

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)


@contextlib.contextmanager
def serve(tmp: Path, *args: str) -> Iterator[Server]:
    """``enkash-coins serve`` in its own process, pinned to core 1 (the clients have core 0)."""
    seed = tmp / "seed.json"
    seed.write_text(json.dumps({"events": [{"company_id": COMPANY, "event": EVENT, "amount": 5}]}))
    state = Path(tempfile.mkdtemp(prefix="state-", dir=tmp))
    with (tmp / "serve.log").open("a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "enkash_coins", "serve", "--port", "0", "--seed", str(seed),
                                 *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(proc.pid, {1})
    try:
        lines: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if "Stop with" in line:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(30)  # bounded: serve prints its banner at once
        banner = "".join(lines)
        if "Stop with" not in banner:
            raise RuntimeError(f"serve did not start: {banner!r}")
        yield Server(banner.split("listening on ")[1].split()[0],
                     banner.split("bearer token (24 h): ")[1].split()[0], proc, state)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


# -- one run of each kind ------------------------------------------------------------

def journal_stats(journal: Path) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(journal)) as db:
        counts = dict(db.execute("SELECT status, COUNT(*) FROM rows GROUP BY status").fetchall())
        times = [t for (t,) in db.execute("SELECT updated FROM rows WHERE updated IS NOT NULL ORDER BY updated")]
    return {"statuses": counts, "journal_mb": round(journal.stat().st_size / MB, 1), **window_rates(times),
            "curve": curve(times)}


def run_cli(server: Server, path: Path, campaign: str, *extra: str, profile: Path | None = None,
            timeout: float = 7200) -> dict[str, Any]:
    """One ``enkash-coins bulk`` run in a fresh process; its cost, the WAL's peak and the journal's rates."""
    journal = Path(f"{path}.journal.sqlite")
    wal = Path(f"{journal}-wal")
    report = path.with_name(path.name + ".cli.json")
    output = path.with_name(path.name + ".cli.out")
    argv = ["bulk", str(path), "--campaign", campaign, "--company-id", COMPANY, "-q", *extra]
    cmd = [sys.executable, "-m", "benchmarks._launch", str(report),
           *(["--profile", str(profile)] if profile else []), "--", *argv]
    watch = Watch(server)
    wal_peak = 0

    def look_at_wal() -> None:
        nonlocal wal_peak
        with contextlib.suppress(OSError):
            wal_peak = max(wal_peak, wal.stat().st_size)

    started = time.perf_counter()
    with output.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=server.env(), stdout=out, stderr=subprocess.STDOUT)
        samples = _supervise(proc, server, timeout, f"the CLI ({' '.join(argv)})", look_at_wal)
    look_at_wal()
    outside = time.perf_counter() - started
    text = output.read_text()
    if not report.exists():
        raise RuntimeError(f"the CLI crashed (exit {proc.returncode}): {text[-2000:]}")
    result: dict[str, Any] = json.loads(report.read_text())
    result.update(argv=argv[2:], output=text[-600:] if result["rc"] else "", outside_wall_s=round(outside, 3),
                  wal_peak_mb=round(wal_peak / MB, 2), **watch.result(result["cpu_user_s"] + result["cpu_sys_s"]))
    if journal.exists():
        result.update(journal_stats(journal))
        rows = sum(result["statuses"].values())
        result.update(rows=rows, rows_per_s=rows / result["wall_s"],
                      last_vs_first=result["last10_rps"] / max(result["first10_rps"], 1e-9),
                      **window_costs(samples, result))
    return result


def run_many(server: Server, path: Path, concurrency: int, timeout: float = 7200) -> dict[str, Any]:
    """``allocate_many`` on the rows of ``path`` in a fresh process."""
    report = path.with_name(path.name + ".many.json")
    watch = Watch(server)
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks._many", server.base_url, server.token, COMPANY,
                             str(path), str(concurrency), str(report)], cwd=ROOT)
    samples = _supervise(proc, server, timeout, "allocate_many")
    if proc.returncode != 0:
        raise RuntimeError(f"allocate_many failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(report.read_text())
    result.update(**watch.result(result["cpu_user_s"] + result["cpu_sys_s"]),
                  rows_per_s=result["rows"] / result["wall_s"],
                  last_vs_first=result["last10_rps"] / max(result["first10_rps"], 1e-9),
                  **window_costs(samples, result))
    return result


# -- the parts -----------------------------------------------------------------------

def side_by_side(server: Server, tmp: Path, rows: int, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"cli": [], "allocate_many": []}
    for r in range(rounds):
        order = ["cli", "allocate_many"] if r % 2 == 0 else ["allocate_many", "cli"]
        for name in order:
            print(f"    round {r + 1}/{rounds}: {name}, {rows:,} rows", file=sys.stderr, flush=True)
            path = write_csv(tmp / f"{name}-{r}.csv", rows, prefix=f"{'C' if name == 'cli' else 'M'}{r}U")
            try:
                if name == "cli":
                    runs[name].append(run_cli(server, path, f"BENCH{r}", "--concurrency", str(CONCURRENCY)))
                else:
                    runs[name].append(run_many(server, path, CONCURRENCY))
            finally:
                _remove(path)
    ratios = [c["rows_per_s"] / m["rows_per_s"] for c, m in zip(runs["cli"], runs["allocate_many"], strict=True)]
    cli, many = runs["cli"], runs["allocate_many"]
    return {
        "rows": rows, "rounds": rounds, "concurrency": CONCURRENCY, "runs": runs,
        "cli_rows_per_s": statistics.median(c["rows_per_s"] for c in cli),
        "many_rows_per_s": statistics.median(m["rows_per_s"] for m in many),
        "cli_vs_many": statistics.median(ratios), "cli_vs_many_each": ratios,
        "peak_rss_mb": max(c["peak_rss_mb"] for c in cli),
        "many_peak_rss_mb": max(m["peak_rss_mb"] for m in many),
        "wal_peak_mb": max(c["wal_peak_mb"] for c in cli),
        "first10_rps": statistics.median(c["first10_rps"] for c in cli),
        "last10_rps": statistics.median(c["last10_rps"] for c in cli),
        "last_vs_first": statistics.median(c["last_vs_first"] for c in cli),
        "last_vs_first_each": [c["last_vs_first"] for c in cli],
        "unknown": sum(c["statuses"].get("unknown", 0) for c in cli),
        "succeeded_all": all(c["rc"] == 0 and c["statuses"] == {"succeeded": rows} for c in cli)
        and all(m["succeeded"] == rows for m in many),
    }


def dry_run(server: Server, tmp: Path, rows: int, repeats: int) -> dict[str, Any]:
    path = write_csv(tmp / "dry.csv", rows, prefix="D")
    try:
        runs = [run_cli(server, path, "DRY", "--dry-run") for _ in range(repeats)]
    finally:
        _remove(path)
    return {"rows": rows, "repeats": repeats, "seconds": statistics.median(r["wall_s"] for r in runs),
            "seconds_each": [r["wall_s"] for r in runs], "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "peak_rss_mb_each": [r["peak_rss_mb"] for r in runs],
            "cpu_s_each": [round(r["cpu_user_s"] + r["cpu_sys_s"], 2) for r in runs],
            "others_share_each": [r["others_share"] for r in runs],
            "ok": all(r["rc"] == 0 for r in runs)}


def paced(server: Server, tmp: Path, rows: int, rate: float) -> dict[str, Any]:
    path = write_csv(tmp / "paced.csv", rows, prefix="P")
    try:
        run = run_cli(server, path, "PACED", "--rate", f"{rate:g}", "--concurrency", str(CONCURRENCY))
    finally:
        _remove(path)
    return {"rows": rows, "rate": rate, "measured_rps": run["send_rps"], "error": run["send_rps"] / rate - 1,
            "seconds": run["span_s"], "statuses": run["statuses"], "rc": run["rc"]}


def rate_limited(tmp: Path, rows: int, limit: float) -> dict[str, Any]:
    with serve(tmp, "--rate-limit", f"{limit:g}", "--request-log", str(max(100_000, 4 * rows))) as server:
        path = write_csv(tmp / "limited.csv", rows, prefix="L")
        try:
            run = run_cli(server, path, "LIMITED", "--concurrency", str(CONCURRENCY))
        finally:
            _remove(path)
        log = [r for r in server.requests() if r["path"] == ALLOCATE]
    limited = sum(1 for r in log if r["status"] == 429)
    return {"rows": rows, "limit": limit, "concurrency": CONCURRENCY, "requests": len(log), "answered_429": limited,
            "share_429": limited / max(len(log), 1), "unknown": run["statuses"].get("unknown", 0),
            "statuses": run["statuses"], "send_rps": run["send_rps"], "rows_per_s": run["rows_per_s"],
            "vs_limit": run["send_rps"] / limit, "rc": run["rc"]}


def verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: what was measured, the bound, and whether it holds."""
    s, d, p, lim = r["side_by_side"], r["dry_run"], r["paced"], r["rate_limited"]
    t = TARGETS
    rows = [
        ("bulk peak RSS (MB)", s["peak_rss_mb"], f"≤ {t['peak_rss_mb']:g}", s["peak_rss_mb"] <= t["peak_rss_mb"]),
        ("WAL peak (MB)", s["wal_peak_mb"], f"≤ {t['wal_peak_mb']:g}", s["wal_peak_mb"] <= t["wal_peak_mb"]),
        ("rows/s last 10% ÷ first 10%", s["last_vs_first"], f"≥ {t['last_vs_first']:g}",
         s["last_vs_first"] >= t["last_vs_first"]),
        ("whole-run rows/s ÷ allocate_many", s["cli_vs_many"], f"≥ {t['cli_vs_many']:g}",
         s["cli_vs_many"] >= t["cli_vs_many"]),
        (f"--dry-run {d['rows']:,} rows (s)", d["seconds"], f"≤ {t['dry_run_s']:g}", d["seconds"] <= t["dry_run_s"]),
        (f"--dry-run {d['rows']:,} rows peak RSS (MB)", d["peak_rss_mb"], f"≤ {t['dry_run_rss_mb']:g}",
         d["peak_rss_mb"] <= t["dry_run_rss_mb"]),
        (f"--rate {p['rate']:g}: measured rows/s", p["measured_rps"],
         f"{p['rate'] * (1 - t['rate_error']):g}–{p['rate'] * (1 + t['rate_error']):g}",
         abs(p["error"]) <= t["rate_error"]),
        (f"--rate-limit {lim['limit']:g}: rows unknown", lim["unknown"], "= 0", lim["unknown"] == t["limited_unknown"]),
        (f"--rate-limit {lim['limit']:g}: 429 share of requests", lim["share_429"], f"≤ {t['limited_429_share']:.0%}",
         lim["share_429"] <= t["limited_429_share"]),
        (f"--rate-limit {lim['limit']:g}: rows/s ÷ {lim['limit']:g}", lim["vs_limit"], f"≥ {t['limited_vs_limit']:g}",
         lim["vs_limit"] >= t["limited_vs_limit"]),
    ]
    return [{"target": name, "value": value, "bound": bound, "ok": bool(ok)} for name, value, bound, ok in rows]


def scenario_campaign(rows: int, rounds: int, *, dry_rows: int, paced_rows: int, limited_rows: int,
                      dry_repeats: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows, "load_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as name:
        tmp = Path(name)
        with serve(tmp, "--request-log", "0") as server:
            print("    side by side", file=sys.stderr, flush=True)
            out["side_by_side"] = side_by_side(server, tmp, rows, rounds)
            print(f"    --dry-run, {dry_rows:,} rows", file=sys.stderr, flush=True)
            out["dry_run"] = dry_run(server, tmp, dry_rows, dry_repeats)
            print(f"    --rate 200, {paced_rows:,} rows", file=sys.stderr, flush=True)
            out["paced"] = paced(server, tmp, paced_rows, 200.0)
        print(f"    serve --rate-limit 300, {limited_rows:,} rows", file=sys.stderr, flush=True)
        out["rate_limited"] = rate_limited(tmp, limited_rows, 300.0)
    out["load_end"] = os.getloadavg()
    out["targets"] = verdicts(out)
    return out


# -- one campaign alone, for profiling --------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.campaign")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--profile", type=Path, help="run the CLI under cProfile; write the stats here")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as name:
        tmp = Path(name)
        with serve(tmp, "--request-log", "0") as server:
            path = write_csv(tmp / "one.csv", args.rows, prefix="X")
            extra = ["--dry-run"] if args.dry_run else ["--concurrency", str(CONCURRENCY)]
            result = run_cli(server, path, "ONE", *extra, profile=args.profile and args.profile.resolve())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
