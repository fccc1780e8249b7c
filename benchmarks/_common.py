"""What every benchmark script shares: where the data is, the machine and versions header, and
rewriting one script's section of RESULTS.md (between ``<!-- name:start -->`` and
``<!-- name:end -->``) while keeping every other section.

The scripts add the repository root to ``sys.path`` before importing this module, so a checkout
runs them without installing medtl.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDTL_SHARED", ROOT.parent / "shared")) / "data"
MEDMNIST = SHARED / "medmnist"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine shows here."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def gpu_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine() -> str:
    gpu = gpu_name()
    return (f"{cpu_name()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}, "
            + (f"GPU {gpu}" if gpu else "no GPU available in this run"))


def versions(*extra: str) -> str:
    """Python, torch, medtl and the named packages that are importable (``extra``: module names)."""
    from medtl import __version__

    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}", f"medtl {__version__}"]
    for name in extra:
        try:
            mod = __import__(name)
            parts.append(f"{name} {getattr(mod, '__version__', '?')}")
        except ImportError:
            continue
    return ", ".join(parts)


def now() -> str:
    return f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"


def command(script: str, argv: Sequence[str] | None) -> str:
    """The command line that reproduces this run (thread settings included: they change the figures)."""
    args = list(argv if argv is not None else sys.argv[1:])
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    return " ".join([f"{threads}python benchmarks/{script}", *args])


def header(script: str, argv: Sequence[str] | None, load_before: str, load_after: str, *extra_versions: str) -> list[str]:
    """The bullet lines every section starts with."""
    return [
        f"- command: `{command(script, argv)}`",
        f"- date: {now()}",
        f"- machine: {machine()}; load average before {load_before}, after {load_after} (1, 5, 15 min)",
        f"- versions: {versions(*extra_versions)}",
    ]


def write_section(path: Path, name: str, body: str) -> None:
    """Replace section ``name`` of ``path`` (between its markers), keeping every other section."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def publish(body: str, section: str, results: Path | None, smoke: bool) -> None:
    """Print the table; write it into RESULTS.md unless this is a smoke run (which writes only where told)."""
    print(body)
    target = results or (None if smoke else RESULTS)
    if target is not None:
        write_section(target, section, body)
        print(f"\nwrote {target}")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """A Markdown table; columns whose index is in ``right`` are right-aligned (numbers)."""
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the servers the tests and benchmarks start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    """Until ``url`` answers 200; an error with the log's tail if ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{what} did not come up: {log.read_text()[-3000:]}")
