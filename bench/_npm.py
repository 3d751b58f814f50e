"""The Node side: Hocuspocus 3.4.4 and the load clients' packages, installed from npm.

`install()` is the one step the Makefile calls (`python -m bench install`);
`python -m bench` calls it too. It installs the exact versions pinned in
bench/js/package.json and package-lock.json into the git-ignored
bench/.baselines/, and does nothing when they are already there.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from bench._errors import Unavailable
from bench._paths import BASELINES_DIR, JS_DIR

NODE_MAJOR = 20  # Hocuspocus 3.x runs on Node 20; 4.x needs Node 22


def _pinned() -> dict[str, str]:
    manifest = json.loads((JS_DIR / "package.json").read_text())
    deps: dict[str, str] = manifest["dependencies"]
    return deps


def _installed_version(package: str) -> str | None:
    manifest = BASELINES_DIR / "node_modules" / package / "package.json"
    try:
        version: str = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return version


def node_version() -> str:
    """The `node --version` on PATH, or Unavailable."""
    if shutil.which("node") is None:
        raise Unavailable("node is not on PATH")
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def install() -> None:
    """Install the pinned npm packages into bench/.baselines/ unless they are there already."""
    node = node_version()
    if int(node.lstrip("v").split(".")[0]) < NODE_MAJOR:
        raise Unavailable(f"node {node} is too old; Hocuspocus 3.4.4 needs Node {NODE_MAJOR}")
    BASELINES_DIR.mkdir(parents=True, exist_ok=True)
    if all(_installed_version(p) == v for p, v in _pinned().items()):
        return
    if shutil.which("npm") is None:
        raise Unavailable("npm is not on PATH")
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(JS_DIR / name, BASELINES_DIR / name)
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        cwd=BASELINES_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise Unavailable(f"npm ci failed: {done.stderr.strip()[-400:]}")
    missing = [p for p, v in _pinned().items() if _installed_version(p) != v]
    if missing:
        raise Unavailable(f"npm ci did not install {', '.join(missing)}")


def sync_scripts() -> None:
    """Copy bench/js/*.mjs next to node_modules so that their imports resolve."""
    for script in JS_DIR.glob("*.mjs"):
        shutil.copyfile(script, BASELINES_DIR / script.name)
