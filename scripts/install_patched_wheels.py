#!/usr/bin/env python
"""Install the LVIS API and cityscapesscripts into the running interpreter, each with a counted NumPy 2 fix.

detectron2's LVIS loader and LVISEvaluator import ``lvis``; its Cityscapes instance evaluation runs
``cityscapesscripts``. Both releases fail under NumPy 2: lvis 0.5.3 (its last release, 2020) calls ``np.float``
in ``LVISEval.accumulate``; cityscapesscripts 2.3.0 calls ``np.in1d`` in its instance and pixel evaluations and
writes NumPy 2's ``count_nonzero`` integers with ``json``. Each pinned wheel is fetched by pip with its sha256
checked, unpacked under ``build/patched-wheels/``, changed by the exact, counted substitutions in ``PACKAGES`` (a
count that differs from the pinned wheel stops the install), repacked with a fresh RECORD and installed under
``constraints.txt`` with its dependencies. (lvis's sdist does not build: its setup.py reads a requirements file it
does not ship.) The installed package carries ``<package>/_install_info.py`` (wheel hash, patch level, patches).
README, section "lvis and cityscapesscripts", lists the patches.

Usage: .venv/bin/python scripts/install_patched_wheels.py [--force]

A second run checks each marker against ``PATCH_LEVEL`` in a fresh interpreter and does nothing more.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from install_common import InstallError, Patch, apply_patches, log, pip, run

REPO_ROOT = Path(__file__).resolve().parents[1]
PATCH_LEVEL = 2  # bump when PATCHES change: a later run then reinstalls


@dataclass(frozen=True)
class Package:
    name: str  # the import name (also the distribution's)
    version: str
    sha256: str  # of the wheel, as PyPI lists it
    patches: tuple
    extra_deps: tuple = ()  # imported but not declared in the wheel's metadata

    @property
    def wheel(self) -> str:
        return f"{self.name}-{self.version}-py3-none-any.whl"


PACKAGES = (
    Package("lvis", "0.5.3", "4f07153330df342b3161fafb46641ce7c02864113a8ddf0d6ffab6b02407bef0", (
        Patch("numpy-float-alias", "lvis/*.py", r"\bnp\.float\b", "float", 2,
              "NumPy 1.24 removed the np.float alias of the builtin float (LVISEval.accumulate's TP/FP sums)"),
        Patch("headless-opencv", "lvis-0.5.3.dist-info/METADATA", r"^Requires-Dist: opencv-python \(",
              "Requires-Dist: opencv-python-headless (", 1,
              "lvis only needs the cv2 module (lvis/vis.py); the headless wheel provides it without GUI libraries, "
              "and two opencv distributions sharing the cv2 folder break each other"),
        Patch("drop-unused-requirements", "lvis-0.5.3.dist-info/METADATA", r"^Requires-Dist: (Cython|six) .*\n", "",
              2, "nothing in lvis imports Cython or six; left in, they are installed for nothing"),
    ), extra_deps=("pycocotools",)),
    Package("cityscapesscripts", "2.3.0", "5d44f2eebc20ea122ffffbe82343fffeb3e741bda9d9cb87d5af148803ba7233", (
        Patch("numpy-in1d", "cityscapesscripts/evaluation/*.py", r"\bnp\.in1d\(", "np.isin(", 3,
              "NumPy 2.4 removed np.in1d; np.isin is the same test keeping the input's shape (each call reshapes "
              "to it anyway; invert= is the same argument)"),
        Patch("numpy-scalars-to-json", "cityscapesscripts/helpers/csHelpers.py",
              r"default=lambda o: o\.__dict__,", 'default=lambda o: o.item() if hasattr(o, "item") else o.__dict__,', 1,
              "NumPy 2's count_nonzero returns a NumPy integer (the evaluation's pixel counts), which writeDict2JSON "
              "could not write; a NumPy scalar is written as its Python value"),
    )),
)


def installed_info(pkg: Package) -> dict | None:
    """The marker of a copy this script installed, as a fresh interpreter sees it; None otherwise."""
    code = f"import json, {pkg.name}._install_info as i; print(json.dumps(i.INFO))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None


def download(pkg: Package, cache: Path) -> Path:
    wheel = cache / pkg.wheel
    if wheel.is_file() and hashlib.sha256(wheel.read_bytes()).hexdigest() == pkg.sha256:
        log(f"using cached {wheel}")
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    req = cache / f"{pkg.name}-requirement.txt"
    req.write_text(f"{pkg.name}=={pkg.version} --hash=sha256:{pkg.sha256}\n")
    run(pip("download", "--no-deps", "--only-binary", ":all:", "--require-hashes", "-r", str(req), "-d", str(cache)))
    if not wheel.is_file():
        raise InstallError(f"pip download did not produce {wheel}")
    return wheel


def _record_line(rel: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [rel, f"sha256={digest}", str(len(data))]


def repack(pkg: Package, src: Path, out: Path) -> Path:
    """A wheel of ``src`` with a RECORD listing every file's new hash (pip and installers read it)."""
    record = f"{pkg.name}-{pkg.version}.dist-info/RECORD"
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


def build(pkg: Package, cache: Path) -> Path:
    src = cache / "src" / pkg.name
    shutil.rmtree(src, ignore_errors=True)
    with zipfile.ZipFile(download(pkg, cache)) as zf:
        zf.extractall(src)
    patches = apply_patches(pkg.patches, src, "the wheel")
    info = {"source": "pypi", "wheel": pkg.wheel, "sha256": pkg.sha256, "patch_level": PATCH_LEVEL,
            "patches": patches}
    (src / pkg.name / "_install_info.py").write_text(
        f'"""Written by moco-bench scripts/install_patched_wheels.py: how this {pkg.name} was installed."""\n\n'
        f"INFO = {json.dumps(info, indent=4)}\n")
    return repack(pkg, src, cache / "wheel" / pkg.wheel)


def install(pkg: Package, cache: Path, constraints: Path, force: bool) -> None:
    start = time.perf_counter()
    info = installed_info(pkg)
    if not force and info and info.get("patch_level") == PATCH_LEVEL:
        log(f"{pkg.name} {pkg.version} already installed (patch level {PATCH_LEVEL}); up to date")
        return
    wheel = build(pkg, cache)
    # the patched wheel replaces any copy, then pip installs what its (patched) metadata requires
    run(pip("install", "--no-deps", "--force-reinstall", str(wheel)))
    run(pip("install", "-c", str(constraints), str(wheel), *pkg.extra_deps))
    if installed_info(pkg) is None:
        raise InstallError(f"{pkg.name} was installed but its marker does not import in a fresh interpreter")
    log(f"installed {pkg.name} {pkg.version} (patch level {PATCH_LEVEL}) in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if the current patch level is installed")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "build" / "patched-wheels",
                        help="wheel cache and build folder (default: build/patched-wheels, git-ignored)")
    parser.add_argument("--constraints", type=Path, default=REPO_ROOT / "constraints.txt")
    args = parser.parse_args(argv)
    try:
        for pkg in PACKAGES:
            install(pkg, args.cache_dir, args.constraints, args.force)
        return 0
    except InstallError as e:
        print(f"install_patched_wheels: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
