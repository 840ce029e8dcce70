"""pip for tox environments, with the pinned torch and torchvision installed once for all of them.

tox gives every environment its own virtualenv, and two environments cannot share one directory
(tox 4 recreates it whenever another environment name uses it). torch is about 5.5 GB, so the pins
in ``SUITE_TORCH_PINS`` are installed once into ``SUITE_TORCH_DIR/<hash of the pins>`` and every
environment gets a ``.pth`` file that puts that directory on its path. pip then sees torch as
installed and leaves it alone. tox calls this script as its ``install_command``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path


def shared_torch_dir() -> Path:
    pins = os.environ["SUITE_TORCH_PINS"].split()
    base = Path(os.environ["SUITE_TORCH_DIR"])
    target = base / hashlib.sha256(" ".join(sorted(pins)).encode()).hexdigest()[:12]
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two tox environments set up at once install it once
        if not (target / ".complete").exists():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            print(f"installing {' '.join(pins)} once, into {target}", flush=True)
            pip = [sys.executable, "-m", "pip", "install", "--no-input", "--target", str(partial)]
            subprocess.check_call([*pip, *pins])
            partial.rename(target)
            (target / ".complete").write_text(" ".join(pins) + "\n")
    return target


def main(argv: list[str]) -> int:
    target = shared_torch_dir()
    site = Path(sysconfig.get_paths()["purelib"])
    (site / "_suite_shared_torch.pth").write_text(f"{target}\n")
    return subprocess.call([sys.executable, "-m", "pip", "install", *argv])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
