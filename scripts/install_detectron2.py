#!/usr/bin/env python
"""Install detectron2 into the running interpreter's environment, with no manual step.

detectron2 is not on PyPI. The official source (GitHub) is used when it can be reached: it builds the
C++/CUDA ops. Otherwise PyPI's ``pb1-detectron2==0.6`` sdist (detectron2 0.6 without its C++ sources)
is downloaded, unpacked, patched by a small compatibility step (``PATCHES`` below, each with its
reason) and installed. README.md (section "detectron2") explains the step and what needs the C++ ops.

Usage: .venv/bin/python scripts/install_detectron2.py [--source auto|official|pypi] [--force]

A second run is a no-op: it only checks that ``import detectron2`` works, that the marker module this
script writes (``detectron2/_install_info.py``) matches the current patch level, and that the pure
dependencies are present.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from install_common import InstallError, Patch, apply_patches, log, pip, run

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_URL = "https://github.com/facebookresearch/detectron2.git"
SDIST_NAME, SDIST_VERSION = "pb1-detectron2", "0.6"
# sha256 of pb1-detectron2-0.6.tar.gz as listed by PyPI's simple index; pip checks it (--require-hashes).
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# pip 26.3 refuses to download/install by name a PyPI sdist whose metadata holds a direct-URL
# requirement (this one's "all" extra names panopticapi @ a GitHub zip); older pips accept it.
LEGACY_PIP = "pip<26.3"
# Bump when PATCHES or the placeholder change: a later run then reinstalls.
PATCH_LEVEL = 1
# detectron2's install_requires (its setup.py), less black (LazyConfig.to_py only), future and pydot
# (caffe2 export only). Installed after detectron2 (--no-deps) under the repository's constraints.
PURE_DEPS = (
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1",
    "hydra-core>=1.1",
    "pyyaml",
)
GIT_TIMEOUT_S = 20


PATCHES = (
    Patch(
        "skip-missing-extension",
        "setup.py",
        r'(\n    main_source = path\.join\(extensions_dir, "vision\.cpp"\)\n)',
        r"\1    if not path.exists(main_source):  # moco-bench: sdist without C++ sources\n        return []\n",
        1,
        "the sdist has no detectron2/layers/csrc, so building detectron2._C fails; build no extension",
    ),
    Patch(
        "package-model-zoo-configs",
        "setup.py",
        r'package_data=\{"detectron2\.model_zoo": get_model_zoo_configs\(\)\}',
        'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]}',
        1,
        "setup.py globs a top-level configs/ the sdist lacks; the YAMLs sit in detectron2/model_zoo/configs",
    ),
    Patch(
        "drop-unused-requirements",
        "setup.py",
        r'\n *"(future|pydot|black==21\.4b2)",[^\n]*',
        "",
        3,
        "caffe2 export (future, pydot) and LazyConfig.to_py (black 21.4b2, which fails to import with click 8.1+) "
        "are unused here; left in the metadata they make `pip check` fail",
    ),
    Patch(
        "collect-env-placeholder",
        "detectron2/utils/collect_env.py",
        r"(\n        import detectron2\._C as _C\n)",
        r'\1        if getattr(_C, "IS_PLACEHOLDER", False):\n'
        r'            raise ImportError("placeholder, installed without the C++ ops")\n',
        1,
        "collect_env (run by default_setup) calls _C.get_compiler_version(); report the placeholder as not built",
    ),
    Patch(
        "pillow-linear",
        "detectron2/data/transforms/transform.py",
        r"\bImage\.LINEAR\b",
        "Image.BILINEAR",
        1,
        "Pillow 10 removed the Image.LINEAR alias; it was the same filter as Image.BILINEAR",
        official=True,
    ),
    Patch(
        "numpy-aliases",
        "detectron2/**/*.py",
        r"\bnp\.(bool|int|float|str|object)\b",
        r"\1",
        19,
        "NumPy 1.24 removed the np.int/np.float/np.str/np.object/np.bool aliases of the builtins "
        "(np.bool_, np.int64 etc. are untouched: the word boundary stops at '_' and digits)",
        official=True,
    ),
    Patch(
        "model-zoo-importlib",
        "detectron2/model_zoo/model_zoo.py",
        r'^import pkg_resources$|pkg_resources\.resource_filename\(\n\s*"detectron2\.model_zoo", '
        r'os\.path\.join\("configs", config_path\)\n\s*\)',
        lambda m: (
            "import importlib.resources"
            if m.group(0).startswith("import")
            else 'str(importlib.resources.files("detectron2.model_zoo") / "configs" / config_path)'
        ),
        2,
        "setuptools 81 removed pkg_resources (and 80 warns on import); importlib.resources does the same lookup",
    ),
)

PLACEHOLDER_C = '''\
"""Placeholder for detectron2's C++ extension, which this install lacks.

Written by moco-bench's scripts/install_detectron2.py: PyPI's pb1-detectron2 0.6 sdist has no C++
sources. Axis-aligned NMS and ROIAlign come from torchvision and work; rotated boxes, deformable
convolution and the fast COCOeval need the real extension (install detectron2 from its source).
"""

IS_PLACEHOLDER = True


class CppOpsUnavailableError(AttributeError):
    """Raised on any use of an op of the missing extension."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise CppOpsUnavailableError(
        f"detectron2._C.{name} is unavailable: this detectron2 was installed from the pb1-detectron2 sdist "
        "without its C++ ops (rotated boxes, deformable conv, fast COCOeval). Install detectron2 from "
        "https://github.com/facebookresearch/detectron2 to use them; for COCO evaluation pass "
        "use_fast_impl=False to COCOEvaluator."
    )
'''


def probe(required: bool = False) -> dict | None:
    """What a fresh interpreter sees: detectron2's version, the install marker, whether _C is real.

    None when ``import detectron2`` fails, or an InstallError with its traceback if ``required``.
    """
    code = (
        "import json, importlib\n"
        "import detectron2\n"
        "try:\n    info = importlib.import_module('detectron2._install_info').INFO\n"
        "except ImportError:\n    info = None\n"
        "try:\n    import detectron2._C as c\n    built = not getattr(c, 'IS_PLACEHOLDER', False)\n"
        "except ImportError:\n    built = False\n"
        "print(json.dumps({'version': detectron2.__version__, 'info': info, 'built': built}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        if required:
            raise InstallError(f"detectron2 was installed but does not import in a fresh interpreter:\n{out.stderr}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def missing_deps() -> list[str]:
    missing = []
    for spec in PURE_DEPS:
        name = re.split(r"[<>=!~ ]", spec, maxsplit=1)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(spec)
    return missing


def is_current(state: dict | None, source: str) -> bool:
    """True when the installed detectron2 is one this script would leave in place."""
    if state is None:
        return False
    info = state["info"]
    if info is None:  # installed by other means: keep a real build, replace a broken/partial one
        return state["built"] and source != "pypi"
    if source != "auto" and info["source"] != source:
        return False
    return info["source"] == "official" or info.get("patch_level") == PATCH_LEVEL


def official_reachable(url: str) -> bool:
    if shutil.which("git") is None:
        log("git not found: cannot use the official source")
        return False
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        subprocess.run(
            ["git", "ls-remote", "--exit-code", url, "HEAD"],
            check=True,
            capture_output=True,
            env=env,
            timeout=GIT_TIMEOUT_S,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        log(f"{url} not reachable (git ls-remote, {GIT_TIMEOUT_S} s timeout)")
        return False
    return True


def write_marker(src: Path, info: dict) -> None:
    """A module installed with the package, read back by the next run's idempotency check."""
    (src / "detectron2" / "_install_info.py").write_text(
        '"""Written by moco-bench scripts/install_detectron2.py: how this detectron2 was installed."""\n\n'
        f"INFO = {json.dumps(info, indent=4)}\n"
    )


def fetch_official(url: str, ref: str, build: Path) -> Path:
    src = build / "detectron2"
    run(["git", "clone", "--depth", "1", "--branch", ref, url, str(src)], timeout=600)
    commit = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    patches = apply_patches([p for p in PATCHES if p.official], src, "the official source", exact=False)
    write_marker(src, {"source": "official", "url": url, "ref": ref, "commit": commit, "patches": patches})
    return src


def download_sdist(cache: Path) -> Path:
    """The pinned sdist in ``cache`` (kept across runs), fetched by pip with its hash checked."""
    sdist = cache / f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
    if sdist.exists() and hashlib.sha256(sdist.read_bytes()).hexdigest() == SDIST_SHA256:
        log(f"using cached {sdist}")
        return sdist
    cache.mkdir(parents=True, exist_ok=True)
    req = cache / "sdist-requirement.txt"
    req.write_text(f"{SDIST_NAME}=={SDIST_VERSION} --hash=sha256:{SDIST_SHA256}\n")
    env = dict(os.environ)
    pip_version = tuple(int(x) for x in re.findall(r"\d+", importlib.metadata.version("pip"))[:2])
    if pip_version >= (26, 3):
        legacy = cache / "legacy-pip"
        if not (legacy / "pip").is_dir():
            log(f"pip {'.'.join(map(str, pip_version))} refuses this sdist; fetching {LEGACY_PIP} to download it")
            run(pip("install", "--quiet", "--target", str(legacy), LEGACY_PIP))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(legacy), env.get("PYTHONPATH")]))
    # Preparing the sdist's metadata runs its setup.py, which imports torch: no build isolation.
    run(
        pip(
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            "--require-hashes",
            "-r",
            str(req),
            "-d",
            str(cache),
        ),
        env=env,
    )
    if not sdist.exists():
        raise InstallError(f"pip download did not produce {sdist}")
    return sdist


def fetch_pypi(cache: Path, build: Path) -> Path:
    sdist = download_sdist(cache)
    with tarfile.open(sdist) as tar:
        # The "data" filter refuses links and paths outside `build` (Python 3.11.4+ has it).
        tar.extractall(build, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    src = build / f"{SDIST_NAME}-{SDIST_VERSION}"
    patches = apply_patches(PATCHES, src, "the sdist")
    if (src / "detectron2" / "layers" / "csrc" / "vision.cpp").exists():
        raise InstallError(f"{src} has C++ sources: this is not the sdist the compatibility step expects")
    (src / "detectron2" / "_C.py").write_text(PLACEHOLDER_C)
    log("added detectron2/_C.py: a placeholder that raises a clear error when a C++ op is used")
    write_marker(
        src,
        {
            "source": "pypi",
            "sdist": sdist.name,
            "sha256": SDIST_SHA256,
            "patch_level": PATCH_LEVEL,
            "patches": [*patches, "placeholder-_C"],
        },
    )
    return src


def install_source(src: Path) -> None:
    """Build a wheel (the step that can fail), then swap it in for any installed detectron2."""
    wheels = src.parent / f"{src.name}-wheel"
    # setup.py imports torch, which must be the environment's own: no build isolation.
    run(pip("wheel", "--no-build-isolation", "--no-deps", "-w", str(wheels), str(src)))
    found = sorted(wheels.glob("*.whl"))
    if len(found) != 1:
        raise InstallError(f"expected one wheel in {wheels}, found {[w.name for w in found]}")
    # Both distributions own the detectron2/ folder: remove either before installing.
    for dist in ("detectron2", SDIST_NAME):
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        run(pip("uninstall", "--yes", dist))
    run(pip("install", "--no-deps", str(found[0])))


def install_deps(constraints: Path, deps: list[str]) -> None:
    if not constraints.is_file():
        raise InstallError(f"constraints file {constraints} not found (pass --constraints)")
    run(pip("install", "-c", str(constraints), *deps))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        choices=("auto", "official", "pypi"),
        default="auto",
        help="auto: the official source when reachable, else the patched PyPI sdist",
    )
    parser.add_argument("--force", action="store_true", help="reinstall even if a current install is found")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO_ROOT / "build" / "detectron2",
        help="sdist cache and build folder (default: build/detectron2, git-ignored)",
    )
    parser.add_argument("--constraints", type=Path, default=REPO_ROOT / "constraints.txt")
    parser.add_argument("--official-url", default=OFFICIAL_URL)
    parser.add_argument("--official-ref", default="main", help="branch or tag of the official source")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        state = probe()
        if not args.force and is_current(state, args.source):
            deps = missing_deps()
            if deps:
                install_deps(args.constraints, deps)
            log(
                f"detectron2 {state['version']} already installed ({(state['info'] or {}).get('source', 'other')}, "
                f"C++ ops {'built' if state['built'] else 'absent'}); up to date "
                f"({time.perf_counter() - start:.1f} s)"
            )
            return 0
        use_official = args.source != "pypi" and official_reachable(args.official_url)
        if args.source == "official" and not use_official:
            raise InstallError(f"--source official but {args.official_url} cannot be reached")
        build = args.cache_dir / "src"
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir(parents=True)
        installed = False
        if use_official:
            try:
                install_source(fetch_official(args.official_url, args.official_ref, build))
                installed = True
            except InstallError as e:
                if args.source == "official":
                    raise
                log(f"official source failed ({e}); falling back to the PyPI sdist")
        if not installed:
            install_source(fetch_pypi(args.cache_dir, build))
        install_deps(args.constraints, list(PURE_DEPS))
        state = probe(required=True)
        log(
            f"installed detectron2 {state['version']} from {state['info']['source']} "
            f"(C++ ops {'built' if state['built'] else 'absent'}) in {time.perf_counter() - start:.1f} s"
        )
        return 0
    except InstallError as e:
        print(f"install_detectron2: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
