"""Virtual environments holding the official Runware SDKs, created on demand.

The benchmark harness and the reference-server conformance tests drive the two official Python
SDKs as subprocesses, each from its own virtual environment, so their dependencies never mix with
ours:

* ``runware`` 0.5.24 in ``<repo>/.venv-compat/runware-0.5.24``
* ``runware-sdk`` 1.8.0 in ``<repo>/.venv-compat/runware-sdk-1.8.0``

Both packages install a top-level module named ``runware``, which is a second reason they cannot
share one environment.

``ensure_venv()`` is idempotent: a marker file records the finished install, and a lock file keeps
two processes from building the same environment at once. Creating one needs the package index
(the first call takes a minute or so); later calls only check the marker.

Command line: ``python -m benchmarks.compat runware runware-sdk`` prints each interpreter path.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path
from typing import Literal

__all__ = ["PINNED", "SdkPackage", "ensure_venv", "venv_dir"]

SdkPackage = Literal["runware", "runware-sdk"]

#: The exact releases the benchmark and the conformance tests are written against.
PINNED: dict[str, str] = {"runware": "0.5.24", "runware-sdk": "1.8.0"}

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPAT_ROOT = REPO_ROOT / ".venv-compat"
_MARKER = ".installed"
_INSTALL_TIMEOUT_S = 900


def venv_dir(package: SdkPackage) -> Path:
    """Return where the environment for ``package`` lives (it may not exist yet)."""
    return COMPAT_ROOT / f"{package}-{_pinned(package)}"


def ensure_venv(package: SdkPackage) -> Path:
    """Create the virtual environment for an official SDK if needed.

    Args:
        package: ``"runware"`` (0.5.24) or ``"runware-sdk"`` (1.8.0).

    Returns:
        The path of the environment's Python interpreter.

    Raises:
        ValueError: ``package`` is not one of the two pinned SDKs.
        RuntimeError: creating the environment or installing the package failed; the message
            carries the tail of pip's output.
    """
    requirement = f"{package}=={_pinned(package)}"
    root = venv_dir(package)
    python = root / "bin" / "python"
    marker = root / _MARKER
    if _is_ready(marker, python, requirement):
        return python
    COMPAT_ROOT.mkdir(parents=True, exist_ok=True)
    with open(COMPAT_ROOT / f".{package}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if _is_ready(marker, python, requirement):
            return python
        marker.unlink(missing_ok=True)
        if not python.exists():
            _run([sys.executable, "-m", "venv", str(root)], f"creating {root}")
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
            ],
            f"installing {requirement} into {root}",
        )
        marker.write_text(requirement + "\n")
    return python


def _pinned(package: str) -> str:
    try:
        return PINNED[package]
    except KeyError:
        raise ValueError(
            f"unknown SDK package {package!r}; expected one of {sorted(PINNED)}"
        ) from None


def _is_ready(marker: Path, python: Path, requirement: str) -> bool:
    return python.exists() and marker.exists() and marker.read_text().strip() == requirement


def _run(command: list[str], what: str) -> None:
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what} did not finish within {_INSTALL_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def main(argv: list[str] | None = None) -> int:
    """Build the named environments (default: both) and print their interpreter paths."""
    names = argv if argv is not None else sys.argv[1:]
    for name in names or list(PINNED):
        if name not in PINNED:
            print(
                f"unknown SDK package {name!r}; expected one of {sorted(PINNED)}", file=sys.stderr
            )
            return 2
        print(ensure_venv(name))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
