"""``selfstab doctor``: the versions in use, for a bug report.

One line each: selfstab, Python, the platform and CPU, torch (its CUDA, its
BLAS and its threads), numpy, scipy, cvxpy, clarabel, h5py, pandas,
matplotlib, scikit-learn and the rest of the dependencies, then the BLAS
libraries loaded in this process.  A package's version is the one its module
reports once imported (``numpy.__version__``), so a copy shadowing the
installed one shows; ``importlib.metadata`` only where a module has none.
Results can differ between two installs of other versions, or between two
CPUs (float rounding): ``requirements-cpu.txt`` pins the tested versions.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import re
import sys

# (module, distribution) in the order printed: the numerics first, then the rest of the dependencies
PACKAGES = [("torch", "torch"), ("numpy", "numpy"), ("scipy", "scipy"), ("cvxpy", "cvxpy"), ("clarabel", "clarabel"),
            ("h5py", "h5py"), ("pandas", "pandas"), ("matplotlib", "matplotlib"), ("sklearn", "scikit-learn"),
            ("tqdm", "tqdm"), ("mnist1d", "mnist1d"), ("threadpoolctl", "threadpoolctl")]


def register(subparsers) -> None:
    p = subparsers.add_parser("doctor")
    p.set_defaults(func=_doctor)


def _doctor(args) -> int:
    rows = environment()
    width = max(len(name) for name, _ in rows) + 2
    for name, text in rows:
        print(f"{name:<{width}}{text}")
    return 0


def environment() -> list[tuple[str, str]]:
    """``(name, "version  (details)")`` rows: what ``selfstab doctor`` prints."""
    from .. import __version__

    rows = [("selfstab", __version__),
            ("python", f"{platform.python_version()}  ({platform.python_implementation()}, {sys.executable})"),
            ("platform", platform.platform()),
            ("cpu", f"{_cpu_model()}  ({os.cpu_count()} logical cores)")]
    for module, dist in PACKAGES:
        rows.append((dist, _package(module, dist)))
    rows.extend(("blas", line) for line in _blas())
    return rows


def _package(module: str, dist: str) -> str:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        try:
            return f"{importlib.metadata.version(dist)}  (installed, but cannot be imported)"
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    except Exception as exc:   # a broken install: say so, and go on with the others
        return f"cannot import: {type(exc).__name__}: {_first_line(exc)}"
    version = getattr(mod, "__version__", None)
    if not isinstance(version, str):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    details = _DETAILS.get(module)
    if details is not None:
        try:
            extra = details(mod)
        except Exception as exc:
            extra = f"{type(exc).__name__}: {_first_line(exc)}"
        return f"{version}  ({extra})"
    return version


def _torch(torch) -> str:
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s): {', '.join(names)}"
    else:
        cuda = "CUDA not available" + (f" (built for {torch.version.cuda})" if torch.version.cuda else "")
    info = torch.__config__.parallel_info()
    mkl = re.search(r"Math Kernel Library Version (\d[\d.]*)", info)
    blas = f"MKL {mkl.group(1)}" if mkl else ("MKL" if torch.backends.mkl.is_available() else "no MKL")
    return f"{cuda}; {blas}; {torch.get_num_threads()} threads"


def _h5py(h5py) -> str:
    return f"HDF5 {h5py.version.hdf5_version}"


_DETAILS = {"torch": _torch, "h5py": _h5py}


def _blas() -> list[str]:
    """The BLAS libraries loaded in this process (threadpoolctl), else numpy's build configuration."""
    for module in ("numpy", "scipy", "torch", "sklearn"):   # load what each brings, so that it is listed
        try:
            importlib.import_module(module)
        except Exception:
            pass
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [_numpy_blas() + "  (numpy's build; pip install threadpoolctl lists the loaded libraries)"]
    lines = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        where = os.path.basename(os.path.dirname(lib.get("filepath", "")))   # numpy.libs, scipy.libs, …
        layer, arch = lib.get("threading_layer"), lib.get("architecture")
        extra = "".join(f", {x}" for x in (f"threading {layer}" if layer else None, arch) if x)
        lines.append(f"{lib.get('internal_api')} {lib.get('version') or '?'}  ({where}: "
                     f"{lib.get('num_threads')} threads{extra})")
    return lines or [_numpy_blas() + "  (numpy's build; none loaded)"]


def _numpy_blas() -> str:
    try:
        import numpy as np

        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
