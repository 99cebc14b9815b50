"""Run the ``enkash-coins`` CLI in this process, then report what it cost.

``python -m benchmarks._launch REPORT.json [--profile FILE.prof] -- ARGS...`` calls
``enkash_coins._cli._main.main(ARGS)`` exactly as the console script does, then writes
``{"rc", "peak_rss_mb", "cpu_user_s", "cpu_sys_s", "wall_s"}`` to REPORT.json. With
``--profile`` the call runs under cProfile (slower: for hot spots, not for numbers).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    split = args.index("--")
    own, argv = args[:split], args[split + 1:]
    report = own[0]
    profile = own[own.index("--profile") + 1] if "--profile" in own else None
    started = time.perf_counter()
    from enkash_coins._cli._main import main as cli_main  # imports count in wall time and RSS, as for a user

    if profile:
        import cProfile

        profiler = cProfile.Profile()
        rc = profiler.runcall(cli_main, argv)
        profiler.dump_stats(profile)
    else:
        rc = cli_main(argv)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(report, "w") as f:
        json.dump({"rc": rc, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
                   "cpu_user_s": round(usage.ru_utime, 2), "cpu_sys_s": round(usage.ru_stime, 2),
                   "wall_s": round(wall, 3)}, f)
    return int(rc)


if __name__ == "__main__":
    raise SystemExit(main())
