"""Memory (issue 5): importing a 1 GB file stays under 100 MiB RSS.

The child process imports a 1 GiB sparse file (read back as zeros, so generating it costs nothing)
as an encrypted share, the heavier path, and reports its own peak RSS (``VmHWM``), which covers the
interpreter, SQLite's cache and the two batches in flight.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.storage.test_crash import ROOT

GiB = 1 << 30
LIMIT_KIB = 100 * 1024


def test_import_1gb_under_100mib_rss(tmp_path: Path) -> None:
    src = tmp_path / "sparse.bin"
    with open(src, "wb") as f:
        f.truncate(GiB)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.storage.crash_child",
            "import",
            str(tmp_path / "m.db"),
            str(src),
            "--encrypt",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    done = next(line for line in lines if line.startswith("done"))
    assert "written=16384" in done
    hwm = int(next(line for line in lines if line.startswith("hwm")).split()[1])
    print(f"peak RSS importing 1 GiB: {hwm / 1024:.1f} MiB")
    assert 0 < hwm < LIMIT_KIB
    os.unlink(tmp_path / "m.db")
