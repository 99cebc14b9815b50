"""Turn latest.json into a Markdown table and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGETS = {"rps": 0.90, "cpu": 1.15, "memory_mb": 20.0}


def write_markdown(r: dict[str, Any], path: Path) -> None:
    m = r["machine"]
    code = r.get("code", {})
    lines = [
        f"Machine: {m['cpu_count']} CPUs ({m['processor']}), Python {m['python']}, aiohttp {m['aiohttp']}, "
        f"enkash-coins {m['enkash_coins']}, {m['date']}. Whole run: {r['seconds']:.0f} s."
        + (f" Code: {code['commit']}" + (" plus uncommitted changes to enkash_coins/" if code.get(
            "enkash_coins_dirty") else "") + "." if code.get("commit") else "")
        + (" **Quick run: numbers are meaningless.**" if r.get("quick") else ""),
        "",
    ]
    if all(k in r for k in ("allocate_http", "sdk_overhead", "bulk_memory", "token_single_flight", "under_faults")):
        lines += _first_five(r)
    if "campaign" in r:
        lines += _campaign(r["campaign"])
    if "hotpath" in r:
        lines += _hotpath(r["hotpath"])
    path.write_text("\n".join(lines))


def _hotpath(h: dict[str, Any]) -> list[str]:
    names = {"raw_aiohttp": "raw aiohttp (`json=`, `await response.json()`)",
             "sdk_default": "`allocate`, default install (standard library JSON)",
             "sdk_fast": "`allocate`, `fast` extra (orjson)"}
    lines = [
        f"**7. The hot path** (`python -m benchmarks.hotpath`: {h['calls']:,} calls fanned out with "
        f"`asyncio.gather` under a semaphore of {h['concurrency']}, each variant in a fresh client process on "
        f"one core, the server on the other; {h['rounds']} interleaved rounds; ratios per round against raw "
        "aiohttp of the same round, then the median):",
        "",
        "| variant | JSON | calls/s | CPU µs/call | ÷ raw aiohttp (median) | rounds: middle half (all) "
        "| CPU µs above raw |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for name, v in h["variants"].items():
        each = sorted(v["vs_raw_each"])
        spread = (f"{each[len(each) // 4]:.2f}–{each[(3 * len(each)) // 4]:.2f} "
                  f"({each[0]:.2f}–{each[-1]:.2f})")
        lines.append(f"| {names.get(name, name)} | {v['json']} | {v['rps']:,.0f} | {v['cpu_us_per_call']:.0f} "
                     f"| {v['vs_raw']:.2f} | {spread} | {v['cpu_extra_us']:+.1f} |")
    return [*lines, ""]


def _first_five(r: dict[str, Any]) -> list[str]:
    http = r["allocate_http"]
    lines = [
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
        f"round trip is {o['bare_json_us_per_call']:.1f} µs."
        + (f" OpenTelemetry with no provider configured (API {'installed' if o['otel_api_installed'] else 'absent'})"
           f": {o['otel_unconfigured_us_per_call']:.2f} µs per call (target ≤ 2 µs)."
           if "otel_unconfigured_us_per_call" in o else ""),
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
    return lines


def _campaign(c: dict[str, Any]) -> list[str]:
    s, d, p, lim = c["side_by_side"], c["dry_run"], c["paced"], c["rate_limited"]
    load = c["load_start"][0], c["load_end"][0]
    lines = [
        f"**6. Campaign** (`enkash-coins bulk FILE --concurrency {s['concurrency']} -q` on a generated CSV of "
        f"{s['rows']:,} rows, one event, unique users; `serve --request-log 0` in its own process on the other "
        f"core; each run a fresh process; {s['rounds']} interleaved rounds against `allocate_many` on the same "
        f"server; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end; \"others' CPU share\": the "
        "share of both cores other processes used during the run, from /proc/stat):",
        "",
        "| run | rows/s whole run | last 10% ÷ first 10% | peak RSS (MB) | WAL peak (MB) | CPU s (user+sys) "
        "| server CPU s | wall s | others' CPU share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pairs = list(zip(s["runs"]["cli"], s["runs"]["allocate_many"], strict=True))
    labelled = [(f"round {i}: `{'bulk' if x is cli else 'allocate_many'}`", x)
                for i, (cli, many) in enumerate(pairs, 1) for x in (cli, many)]
    for label, x in labelled:
        wal = f"{x['wal_peak_mb']:.1f}" if "wal_peak_mb" in x else "–"
        lines.append(
            f"| {label} | {x['rows_per_s']:,.0f} | {x['last_vs_first']:.2f} | {x['peak_rss_mb']:.1f} | {wal} "
            f"| {x['cpu_user_s'] + x['cpu_sys_s']:.1f} | {x['server_cpu_s']:.1f} | {x['wall_s']:.1f} "
            f"| {x['others_share']:.0%} |")
    if all("first10_client_us_per_row" in x for _, x in labelled):
        lines += [
            "",
            "First and last 10% of the rows (by completion time): rows/s, the client's and the server's CPU per row, "
            "and the share of the cores other processes took meanwhile:",
            "",
            "| run | rows/s first | rows/s last | client µs/row first | last | server µs/row first | last "
            "| others' share first | last |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, x in labelled:
            lines.append(
                f"| {label} | {x['first10_rps']:,.0f} | {x['last10_rps']:,.0f} "
                f"| {x['first10_client_us_per_row']:.0f} | {x['last10_client_us_per_row']:.0f} "
                f"| {x['first10_server_us_per_row']:.0f} | {x['last10_server_us_per_row']:.0f} "
                f"| {x['first10_others_share']:.0%} | {x['last10_others_share']:.0%} |")
    each = ", ".join(f"{x:.2f}" for x in s["cli_vs_many_each"])
    lines += [
        "",
        f"`bulk` whole-run rows/s ÷ `allocate_many`: {s['cli_vs_many']:.2f} (median; per round: {each}). "
        f"`--dry-run` of {d['rows']:,} rows: {d['seconds']:.1f} s (median of {d['repeats']}), peak RSS "
        f"{d['peak_rss_mb']:.1f} MB. `--rate {p['rate']:g}` on {p['rows']:,} rows: {p['measured_rps']:.1f} rows/s "
        f"measured ({p['error']:+.1%}). `serve --rate-limit {lim['limit']:g}`, {lim['rows']:,} rows at concurrency "
        f"{lim['concurrency']}, no `--rate`: {lim['unknown']} unknown, {lim['answered_429']} of {lim['requests']:,} "
        f"requests answered 429 ({lim['share_429']:.1%}), {lim['send_rps']:.0f} rows/s "
        f"({lim['vs_limit']:.2f}× the limit). Others' CPU share during the dry runs: "
        + ", ".join(f"{x:.0%}" for x in d.get("others_share_each", [])) + ".",
        "",
        "| target | measured | bound | met |",
        "|---|---:|---:|:---:|",
    ]
    for t in c["targets"]:
        value = t["value"]
        shown = f"{value:.1%}" if "share" in t["target"] else f"{value:,.2f}" if isinstance(value, float) else value
        lines.append(f"| {t['target']} | {shown} | {t['bound']} | {'yes' if t['ok'] else '**no**'} |")
    lines.append("")
    return lines


def write_plot(r: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the bench extra is missing: table only
        return
    campaign = r.get("campaign")
    if "allocate_http" not in r:
        return
    rows = r["allocate_http"]["rows"]
    conc = [row["concurrency"] for row in rows]
    if campaign and campaign["side_by_side"]["runs"]["cli"][0].get("curve"):
        fig, (left, right, third) = plt.subplots(1, 3, figsize=(16, 4.2))
        _campaign_plot(third, campaign)
    else:
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
    fig.suptitle(f"{m['cpu_count']} CPUs, Python {m['python']}, aiohttp {m['aiohttp']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _campaign_plot(ax: Any, c: dict[str, Any]) -> None:
    s = c["side_by_side"]
    for i, (cli, many) in enumerate(zip(s["runs"]["cli"], s["runs"]["allocate_many"], strict=True), 1):
        for x, label, style in ((cli, "enkash-coins bulk", "-"), (many, "allocate_many", "--")):
            points = x.get("curve") or []
            if points:
                ax.plot([100 * (j + 0.5) / len(points) for j in range(len(points))], points, style,
                        color="C0" if style == "-" else "C1", alpha=0.9 if i == 1 else 0.5,
                        label=label if i == 1 else None)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("% of the sending time")
    ax.set_ylabel("rows/s (journal completion times)")
    ax.set_title(f"Campaign of {s['rows']:,} rows, {s['rounds']} rounds")
    ax.grid(alpha=0.3)
    ax.legend()
