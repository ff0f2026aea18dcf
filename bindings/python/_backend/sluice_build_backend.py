"""A minimal PEP 517 build backend for the sluice package, kept in-tree.

Why not setuptools: `pip install ./bindings/python` must work offline with the venv's pip, and pip's build
isolation would fetch setuptools and wheel from the index (the venv's setuptools is too old to build wheels
without the separate `wheel` package, which is not installed). The package is pure Python plus, optionally, the
already-built libsluice.so, so a wheel is just a zip with a .dist-info folder: about a hundred lines, no
dependencies.

Bundling the library: if one is found at build time ($SLUICE_LIB, else <repo>/build/libsluice.so), it is copied
into the wheel as sluice/libsluice.so, where the package looks first after $SLUICE_LIB, so an installed package
works without the source tree. The wheel is then tagged for this platform; set SLUICE_BUNDLE_LIB=0 for a
pure-Python wheel that relies on $SLUICE_LIB at run time.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sysconfig
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

NAME = "sluice"
VERSION = "0.1.0"
SRC = Path(__file__).resolve().parent.parent  # bindings/python
SUMMARY = "Python bindings for the Sluice LLM inference engine (ctypes over libsluice.so)"


def _metadata() -> str:
    readme = (SRC / "README.md").read_text(encoding="utf-8") if (SRC / "README.md").is_file() else ""
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {NAME}\n"
        f"Version: {VERSION}\n"
        f"Summary: {SUMMARY}\n"
        "Requires-Python: >=3.8\n"
        "Description-Content-Type: text/markdown\n"
        "\n" + readme
    )


def _package_files() -> List[Tuple[str, bytes]]:
    out = []
    for p in sorted((SRC / NAME).rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".typed"):
            out.append((p.relative_to(SRC).as_posix(), p.read_bytes()))
    return out


def _find_lib() -> Optional[Path]:
    if os.environ.get("SLUICE_BUNDLE_LIB", "1") == "0":
        return None
    env = os.environ.get("SLUICE_LIB")
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"SLUICE_LIB={env} does not exist")
        return p.resolve()
    for d in SRC.parents:
        if (d / "include" / "sluice" / "sluice.h").is_file():
            p = d / "build" / "libsluice.so"
            return p.resolve() if p.is_file() else None
    return None


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(wheel_directory: str, files: List[Tuple[str, bytes]], tag: str, purelib: bool) -> str:
    dist_info = f"{NAME}-{VERSION}.dist-info"
    wheel_meta = (
        "Wheel-Version: 1.0\n"
        "Generator: sluice_build_backend\n"
        f"Root-Is-Purelib: {'true' if purelib else 'false'}\n"
        f"Tag: {tag}\n"
    )
    files = files + [
        (f"{dist_info}/METADATA", _metadata().encode()),
        (f"{dist_info}/WHEEL", wheel_meta.encode()),
        (f"{dist_info}/top_level.txt", f"{NAME}\n".encode()),
    ]
    record = "\n".join(_record_line(n, d) for n, d in files) + f"\n{dist_info}/RECORD,,\n"
    files.append((f"{dist_info}/RECORD", record.encode()))
    wheel_name = f"{NAME}-{VERSION}-{tag}.whl"
    with zipfile.ZipFile(Path(wheel_directory) / wheel_name, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files:
            info = zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0))
            # Executable bit for the shared library, plain read/write for the rest.
            info.external_attr = (0o755 if n.endswith(".so") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, d)
    return wheel_name


def _platform_tag() -> str:
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


# ---- PEP 517 hooks --------------------------------------------------------------------------------------------
def get_requires_for_build_wheel(config_settings: Optional[Dict] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[Dict] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[Dict] = None) -> List[str]:
    return []


def build_wheel(wheel_directory: str, config_settings: Optional[Dict] = None,
                metadata_directory: Optional[str] = None) -> str:
    files = _package_files()
    lib = _find_lib()
    if lib is None:
        return _write_wheel(wheel_directory, files, "py3-none-any", purelib=True)
    files.append((f"{NAME}/libsluice.so", lib.read_bytes()))
    return _write_wheel(wheel_directory, files, f"py3-none-{_platform_tag()}", purelib=False)


def build_editable(wheel_directory: str, config_settings: Optional[Dict] = None,
                   metadata_directory: Optional[str] = None) -> str:
    # A .pth file puts the source folder on sys.path; the package then finds the build tree by walking up.
    files = [(f"_{NAME}_editable.pth", (str(SRC) + "\n").encode())]
    return _write_wheel(wheel_directory, files, "py3-none-any", purelib=True)


def build_sdist(sdist_directory: str, config_settings: Optional[Dict] = None) -> str:
    base = f"{NAME}-{VERSION}"
    name = f"{base}.tar.gz"
    with tarfile.open(Path(sdist_directory) / name, "w:gz") as tar:
        def add(rel: str, data: bytes) -> None:
            ti = tarfile.TarInfo(f"{base}/{rel}")
            ti.size = len(data)
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(data))

        for rel, data in _package_files():
            add(rel, data)
        for rel in ("pyproject.toml", "README.md", "_backend/sluice_build_backend.py"):
            p = SRC / rel
            if p.is_file():
                add(rel, p.read_bytes())
        add("PKG-INFO", _metadata().encode())
    return name
