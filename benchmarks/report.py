"""Turn latest.json into a Markdown table and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGETS = {"rps": 0.90, "cpu": 1.15, "memory_mb": 20.0}


def write_markdown(r: dict[str, Any], path: Path) -> None:
    m = r["machine"]
    http = r["allocate_http"]
    lines = [
        f"Machine: {m['cpu_count']} CPUs ({m['processor']}), Python {m['python']}, aiohttp {m['aiohttp']}, "
        f"enkash-coins {m['enkash_coins']}, {m['date']}. Whole run: {r['seconds']:.0f} s."
        + (" **Quick run: numbers are meaningless.**" if r.get("quick") else ""),
        "",
        f"**1. Allocate over HTTP** (N={http['n']} per run, median of {http['repeats']} interleaved runs; "
        "server in its own process):",
        "",
        "| concurrency | SDK req/s | raw aiohttp req/s | raw httpx req/s | SDK/aiohttp throughput "
        "| SDK CPU µs/call | aiohttp CPU µs/call | httpx CPU µs/call | SDK/aiohttp CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in http["rows"]:
        lines.append(
            f"| {row['concurrency']} | {row['sdk_rps']:,.0f} | {row['raw_aiohttp_rps']:,.0f} "
            f"| {row['raw_httpx_rps']:,.0f} | {row['sdk_vs_aiohttp_rps']:.2f} | {row['sdk_cpu_us']:.0f} "
            f"| {row['raw_aiohttp_cpu_us']:.0f} | {row['raw_httpx_cpu_us']:.0f} | {row['sdk_vs_aiohttp_cpu']:.2f} |"
        )
    o, mem, tok, f = r["sdk_overhead"], r["bulk_memory"], r["token_single_flight"], r["under_faults"]
    lines += [
        "",
        f"**2. SDK overhead alone** (trivial in-memory transport, N={o['n']}): {o['sdk_us_per_call']:.1f} µs "
        f"per allocation ({o['sdk_calls_per_s']:,.0f}/s on one core); a bare `json.dumps` + `json.loads` "
        f"round trip is {o['bare_json_us_per_call']:.1f} µs.",
        "",
        f"**3. Bulk memory** (peak RSS; the interpreter with the SDK imported: {mem['baseline_mb']:.0f} MB):",
        "",
        "| run | peak RSS (MB) |",
        "|---|---:|",
        f"| `allocate_stream`, {mem['small']:,} items | {mem['stream_small_mb']:.1f} |",
        f"| `allocate_stream`, {mem['large']:,} items | {mem['stream_large_mb']:.1f} |",
        f"| naive `asyncio.gather`, {mem['small']:,} items | {mem['gather_small_mb']:.1f} |",
        "",
        f"Growth from {mem['small']:,} to {mem['large']:,} streamed items: {mem['stream_growth_mb']:+.1f} MB "
        f"(target: within {TARGETS['memory_mb']:.0f} MB).",
        "",
        f"**4. Token single flight**: {tok['calls']:,} concurrent first calls with `PasswordGrant` made "
        f"{tok['token_requests']} token request(s); all done in {tok['seconds']:.2f} s.",
        "",
        f"**5. Under faults** (N={f['n']}, HTTP fake in its own process, concurrency 64):",
        "",
        "| run | allocations/s | allocate requests | extra requests | succeeded | unknown |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in ("fault_free", "unavailable_10pct"):
        x = f[label]
        lines.append(f"| {label.replace('_', ' ')} | {x['rps']:,.0f} | {x['requests']:,} | {x['extra_requests']:,} "
                     f"| {x['succeeded']:,} | {x['unknown']:,} |")
    lines += ["", f"Throughput with 10% 503s: {f['throughput_ratio']:.2f}× the fault-free run.", ""]
    path.write_text("\n".join(lines))


def write_plot(r: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the bench extra is missing: table only
        return
    rows = r["allocate_http"]["rows"]
    conc = [row["concurrency"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("sdk", "enkash-coins SDK"), ("raw_aiohttp", "raw aiohttp"), ("raw_httpx", "raw httpx")):
        left.plot(conc, [row[f"{key}_rps"] for row in rows], marker="o", label=label)
        right.plot(conc, [row[f"{key}_cpu_us"] for row in rows], marker="o", label=label)
    right.set_yscale("log")  # httpx is an order of magnitude above the other two
    for ax, title, unit in ((left, "Throughput (higher is better)", "requests/s"),
                            (right, "Client CPU per call (lower is better)", "µs, log scale")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(conc, [str(c) for c in conc])
        ax.set_xlabel("concurrency")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    m = r["machine"]
    fig.suptitle(f"Allocate over HTTP, {m['cpu_count']} CPUs, Python {m['python']}, aiohttp {m['aiohttp']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
