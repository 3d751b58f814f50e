"""Where the bench finds the repository, its Node side and its scratch space."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
JS_DIR = BENCH_DIR / "js"
BASELINES_DIR = BENCH_DIR / ".baselines"  # git-ignored: node_modules and copies of js/*.mjs
WORK_DIR = BENCH_DIR / ".work"  # git-ignored: data directories and server logs of the last run
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable
