"""What a fresh interpreter holds once some code has run, for the tests that pin which
modules a process imports: each costs every start of it time, and some add at-fork
handlers to every child it forks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def modules_after(code: str) -> set[str]:
    """The names in ``sys.modules`` of a new interpreter (in the repository) after ``code``."""
    shown = code + "\nimport sys\nprint(' '.join(sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", shown], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return set(out.split())
