"""The README's walk-through runs, and its hand-written iteration agrees with the library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "demos" / "walkthrough.py"


def test_walkthrough_matches_the_library():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ABP.langevin gives the same Z: True;  ABP.learn gives the same W: True" in out.stdout
    # Langevin and learning raise the log-likelihood on this example.
    values = [
        float(line.split(":")[-1]) for line in out.stdout.splitlines() if line.startswith("L ")
    ]
    assert len(values) == 3 and values[0] < values[1] < values[2]
