#!/usr/bin/env python
"""Install the LVIS API (PyPI ``lvis==0.5.3``) into the running interpreter, with a NumPy 2 fix.

detectron2's LVIS loader and LVISEvaluator import ``lvis``. Its last release (0.5.3, 2020) uses ``np.float``,
which NumPy 1.24 removed, in ``LVISEval.accumulate``: every evaluation would fail. Its sdist does not build
(setup.py reads a requirements file it does not ship), so the pinned wheel is fetched by pip with its sha256
checked, unpacked under ``build/lvis/``, changed by the exact, counted substitutions in ``PATCHES`` (a count
that differs from the pinned wheel stops the install), repacked with a fresh RECORD and installed with
``--no-deps``; its runtime dependencies are then installed under ``constraints.txt``. The installed package
carries ``lvis/_install_info.py`` (wheel hash, patch level, patches). README, section "lvis", lists the patches.

Usage: .venv/bin/python scripts/install_lvis.py [--force]

A second run checks that ``import lvis`` works and that the marker matches ``PATCH_LEVEL``, then does nothing.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME, VERSION = "lvis", "0.5.3"
WHEEL = f"{NAME}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "4f07153330df342b3161fafb46641ce7c02864113a8ddf0d6ffab6b02407bef0"  # PyPI's listing of the wheel
PATCH_LEVEL = 1  # bump when PATCHES change: a later run then reinstalls
# What lvis imports at run time: pycocotools (masks), matplotlib and cv2 (lvis/vis.py, imported by its __init__).
# opencv-python-headless is the same cv2 without the GUI libraries (and is what the test extra installs).
RUNTIME_DEPS = ("pycocotools", "matplotlib", "opencv-python-headless")


@dataclass(frozen=True)
class Patch:
    """One exact, counted regex substitution in the unpacked wheel."""

    name: str
    files: str  # glob relative to the unpacked wheel
    pattern: str
    replacement: str
    count: int  # occurrences in the pinned wheel; anything else aborts the install
    why: str


PATCHES = (
    Patch("numpy-float-alias", "lvis/*.py", r"\bnp\.float\b", "float", 2,
          "NumPy 1.24 removed the np.float alias of the builtin float (LVISEval.accumulate's cumulative TP/FP sums)"),
    Patch("headless-opencv", f"{NAME}-{VERSION}.dist-info/METADATA", r"^Requires-Dist: opencv-python \(",
          "Requires-Dist: opencv-python-headless (", 1,
          "lvis only needs the cv2 module; the headless wheel provides it without GUI libraries, and two opencv "
          "distributions sharing the cv2 folder break each other"),
    Patch("drop-unused-requirements", f"{NAME}-{VERSION}.dist-info/METADATA", r"^Requires-Dist: (Cython|six) .*\n", "",
          2, "nothing in lvis imports Cython or six; left in the metadata, they make `pip check` fail"),
)


class InstallError(RuntimeError):
    """A step failed; the message says which."""


def log(msg: str) -> None:
    print(f"[install_lvis] {msg}", flush=True)


def run(cmd: list[str]) -> None:
    log("$ " + " ".join(cmd))
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as e:
        raise InstallError(f"`{' '.join(cmd)}` exited with status {e.returncode} (its output is above)") from e


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args]


def installed_info() -> dict | None:
    """The marker of an lvis this script installed, as a fresh interpreter sees it; None otherwise."""
    code = "import json, lvis._install_info as i; print(json.dumps(i.INFO))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None


def download(cache: Path) -> Path:
    wheel = cache / WHEEL
    if wheel.is_file() and hashlib.sha256(wheel.read_bytes()).hexdigest() == WHEEL_SHA256:
        log(f"using cached {wheel}")
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    req = cache / "requirement.txt"
    req.write_text(f"{NAME}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    run(pip("download", "--no-deps", "--only-binary", ":all:", "--require-hashes", "-r", str(req), "-d", str(cache)))
    if not wheel.is_file():
        raise InstallError(f"pip download did not produce {wheel}")
    return wheel


def apply_patches(src: Path) -> list[str]:
    for patch in PATCHES:
        total = 0
        for path in sorted(src.glob(patch.files)):
            new, n = re.subn(patch.pattern, patch.replacement, path.read_text(), flags=re.MULTILINE)
            if n:
                path.write_text(new)
                total += n
        if total != patch.count:
            raise InstallError(f"patch {patch.name}: expected {patch.count} match(es) in {patch.files} under {src}, "
                               f"found {total}; the wheel is not the one this step was written for")
        log(f"patched {patch.name} ({total}x {patch.files}): {patch.why}")
    return [p.name for p in PATCHES]


def _record_line(rel: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [rel, f"sha256={digest}", str(len(data))]


def repack(src: Path, out: Path) -> Path:
    """A wheel of ``src`` with a RECORD listing every file's new hash (pip and installers read it)."""
    record = f"{NAME}-{VERSION}.dist-info/RECORD"
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.relative_to(src).as_posix() != record)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            rel, data = path.relative_to(src).as_posix(), path.read_bytes()
            zf.writestr(rel, data)
            writer.writerow(_record_line(rel, data))
        writer.writerow([record, "", ""])
        zf.writestr(record, rows.getvalue())
    return out


def build(cache: Path) -> Path:
    src = cache / "src"
    shutil.rmtree(src, ignore_errors=True)
    with zipfile.ZipFile(download(cache)) as zf:
        zf.extractall(src)
    patches = apply_patches(src)
    info = {"source": "pypi", "wheel": WHEEL, "sha256": WHEEL_SHA256, "patch_level": PATCH_LEVEL, "patches": patches}
    (src / NAME / "_install_info.py").write_text(
        '"""Written by moco-bench scripts/install_lvis.py: how this lvis was installed."""\n\n'
        f"INFO = {json.dumps(info, indent=4)}\n")
    return repack(src, cache / "wheel" / WHEEL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if the current patch level is installed")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "build" / "lvis",
                        help="wheel cache and build folder (default: build/lvis, git-ignored)")
    parser.add_argument("--constraints", type=Path, default=REPO_ROOT / "constraints.txt")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        info = installed_info()
        if not args.force and info and info.get("patch_level") == PATCH_LEVEL:
            log(f"lvis {VERSION} already installed (patch level {PATCH_LEVEL}); up to date "
                f"({time.perf_counter() - start:.1f} s)")
            return 0
        wheel = build(args.cache_dir)
        run(pip("install", "--no-deps", "--force-reinstall", str(wheel)))
        run(pip("install", "-c", str(args.constraints), *RUNTIME_DEPS))
        if installed_info() is None:
            raise InstallError("lvis was installed but `import lvis._install_info` fails in a fresh interpreter")
        log(f"installed lvis {VERSION} (patch level {PATCH_LEVEL}) in {time.perf_counter() - start:.1f} s")
        return 0
    except InstallError as e:
        print(f"install_lvis: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
