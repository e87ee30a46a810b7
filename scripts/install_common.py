"""What the install scripts share: exact, counted source patches and logged pip commands.

``install_detectron2.py`` and ``install_patched_wheels.py`` each change a pinned release by regex substitutions
whose match counts are part of the pin: a count that differs means the release is not the one the patch was
written for, and the install stops instead of guessing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class Patch:
    """One exact, counted regex substitution in an unpacked release."""

    name: str
    files: str  # glob relative to the unpacked release
    pattern: str
    replacement: str
    count: int  # occurrences in the pinned release; anything else aborts the install
    why: str
    official: bool = False  # detectron2: also applied, where it matches, to the official source (runtime fixes)


class InstallError(RuntimeError):
    """A step failed; the message says which and what to do."""


def log(msg: str) -> None:
    print(f"[{Path(sys.argv[0]).stem}] {msg}", flush=True)


def run(cmd: list[str], *, env: dict | None = None, timeout: float | None = None) -> None:
    log("$ " + " ".join(cmd))
    try:
        subprocess.run(cmd, check=True, env=env, timeout=timeout)
    except subprocess.CalledProcessError as e:
        raise InstallError(f"`{' '.join(cmd)}` exited with status {e.returncode} (its output is above)") from e
    except subprocess.TimeoutExpired as e:
        raise InstallError(f"`{' '.join(cmd)}` took longer than {timeout} s") from e


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args]


def apply_patches(patches: Iterable[Patch], src: Path, release: str, exact: bool = True) -> list[str]:
    """Apply ``patches`` under ``src``; with ``exact``, a match count other than the patch's is an error naming
    ``release``. Returns the names of the patches that changed something."""
    applied = []
    for patch in patches:
        total = 0
        for path in sorted(src.glob(patch.files)):
            new, n = re.subn(patch.pattern, patch.replacement, path.read_text(), flags=re.MULTILINE)
            if n:
                path.write_text(new)
                total += n
        if exact and total != patch.count:
            raise InstallError(f"patch {patch.name}: expected {patch.count} match(es) in {patch.files} under {src}, "
                               f"found {total}; {release} is not the one this step was written for")
        if total:
            log(f"patched {patch.name} ({total}x {patch.files}): {patch.why}")
            applied.append(patch.name)
    return applied
