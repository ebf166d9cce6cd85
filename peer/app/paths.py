"""Where a peer keeps its files by default (DESIGN §10: ``$XDG_DATA_HOME/peersm``)."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "peersm"
