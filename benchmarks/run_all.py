"""Run every benchmarks/bench_*.py (each in its own interpreter) and print one table.

`make bench` runs this. Each benchmark also leaves its rows in benchmarks/results/<topic>.json.
Pass names to run a subset: `python benchmarks/run_all.py bus files`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    wanted = set(sys.argv[1:])
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not wanted or p.stem.removeprefix("bench_") in wanted)
    failed = []
    for script in scripts:
        print(f"\n=== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.name)
    print("\n=== summary (benchmarks/results/*.json)")
    for path in sorted((HERE / "results").glob("*.json")):
        payload = json.loads(path.read_text())
        for row in payload["rows"]:
            print(f"  {payload['topic']:<16} {row['what']:<60} {row['value']:>14,.3f} {row['unit']}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
