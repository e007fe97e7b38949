"""Run every benchmark and print its figures: write load, rebuild + RSS, school sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = [
    ["write_load.py", "--seconds", "5"],
    ["rebuild.py"],
    ["sync_school.py", "S"],
]

if __name__ == "__main__":
    if "--with-L" in sys.argv:
        RUNS.append(["sync_school.py", "L"])
    failed = 0
    for script, *args in RUNS:
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        failed |= subprocess.run([sys.executable, str(HERE / script), *args]).returncode != 0
    sys.exit(1 if failed else 0)
