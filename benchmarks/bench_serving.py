"""Serving throughput: scans/s and p50/p95 request latency, single-scan and batched requests of real
DICOM bytes (base64 in a ``content`` column), to a local ``mlflow models serve`` against calling the
same pyfunc in-process (no HTTP, no JSON, no second process: the floor a server adds to).

The model is a randomly initialised backbone logged through medtl's own ``log_classifier`` and
registered in a throwaway sqlite store: serving cost does not depend on what the weights learned.
Every request carries the same file (``--scan``, default a 512x512 uncompressed CT), so the figures
are preprocessing + forward + (for REST) encoding, parsing and transport; on the CPU only (the
pyfunc scores on the CPU).

    python benchmarks/bench_serving.py            # resnet18 at 224 px, writes RESULTS.md
    python benchmarks/bench_serving.py --smoke    # seconds: 64 px, a few requests (tests)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import SHARED, free_port, header, load_average, markdown_table, publish, wait_for_http  # noqa: E402

CLASSES = ["clear", "marker"]


def log_random_model(name: str, backbone: str = "resnet18", size: int = 224) -> str:
    """A randomly initialised ``backbone`` logged like a comparison's model, registered as ``name@champion``.

    The store is MLFLOW_TRACKING_URI's (else medtl's default), connected here: an earlier caller in the
    same process may have pointed MLflow at another store. Head weights are scaled up so that different
    scans get clearly different probabilities (a comparison of two paths then proves something).
    """
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    from medtl.config import PreprocessConfig
    from medtl.models.registry import input_spec
    from medtl.models.transfer import create_model
    from medtl.tracking.provenance import pip_requirements
    from medtl.tracking.pyfunc import log_classifier, model_meta
    from medtl.tracking.store import connect

    torch.manual_seed(0)
    model, _ = create_model(backbone, len(CLASSES), pretrained=False, spec=input_spec(backbone, size))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(20)
    meta = model_meta(model, CLASSES, PreprocessConfig(assume_modality="CT", window="lung"), "linear", "full")
    client = MlflowClient(connect())  # explicit ids: MLflow's process-wide current experiment and run stay untouched
    experiment = client.get_experiment_by_name("serving")
    run = client.create_run(experiment.experiment_id if experiment else client.create_experiment("serving"))
    uri = log_classifier(run.info.run_id, model, meta, f"# Model card: {name}\n", pip_requirements(), tags={})
    client.set_terminated(run.info.run_id)
    mv = mlflow.register_model(uri, name)
    client.set_registered_model_alias(name, "champion", mv.version)
    return f"models:/{name}@champion"


class ModelServer:
    """``mlflow models serve`` of a model URI on 127.0.0.1 (its own free port and process group); ``stop`` ends it."""

    def __init__(self, model_uri: str, folder: Path, env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"serve-{self.port}.log"
        cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # uvicorn, as in an active venv
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **(env or {}), "PATH": path})

    def wait(self, timeout: float = 240) -> None:
        wait_for_http(f"{self.url}/ping", self.proc, self.log, "mlflow models serve", timeout)

    def post(self, payload: dict) -> tuple[int, str]:
        req = urllib.request.Request(f"{self.url}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


def timed(call: Callable[[], None], requests: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(requests):
        t = time.perf_counter()
        call()
        out.append(time.perf_counter() - t)
    return out


def in_worker_thread(call: Callable[[], list[float]]) -> list[float]:
    """Run ``call`` in a fresh thread, as MLflow's scoring server runs ``predict`` (``asyncio.to_thread``)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def row(how: str, batch: int, seconds: list[float]) -> list[object]:
    s = np.asarray(seconds)
    return [how, batch, len(s), f"{batch * len(s) / s.sum():.1f}", f"{1000 * np.percentile(s, 50):.0f}",
            f"{1000 * np.percentile(s, 95):.0f}"]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16, help="scans per batched request")
    ap.add_argument("--requests", type=int, default=30, help="timed requests per row (after one warm-up)")
    ap.add_argument("--scan", type=Path, default=SHARED / "dicom" / "single" / "693_UNCR.dcm")
    ap.add_argument("--smoke", action="store_true", help="64 px, 3 requests, batch 4: for tests")
    ap.add_argument("--results", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.smoke:
        a.size, a.requests, a.batch = 64, 3, 4
    if not a.scan.is_file():
        print(f"bench_serving: {a.scan}: not found (the shared data beside the repository)", file=sys.stderr)
        return 1
    load_before = load_average()
    import mlflow
    import pandas as pd
    import torch

    content = base64.b64encode(a.scan.read_bytes()).decode()
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        folder = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
        uri = log_random_model("bench-serving", a.backbone, a.size)
        server = ModelServer(uri, folder, {"MEDTL_SERVE_MAX_ROWS": str(max(64, a.batch))})
        try:
            model = mlflow.pyfunc.load_model(uri)
            server.wait()  # measured once the server is up: its start-up does not compete with the in-process rows
            for batch in (1, a.batch):
                frame = pd.DataFrame({"content": [content] * batch})
                rows.append(row(f"pyfunc in-process, main thread (torch threads {torch.get_num_threads()})", batch,
                                timed(lambda f=frame: model.predict(f), a.requests)))
                rows.append(row("pyfunc in-process, worker thread (as the server calls it)", batch,
                                in_worker_thread(lambda f=frame: timed(lambda: model.predict(f), a.requests))))
            for batch in (1, a.batch):
                payload = {"dataframe_split": {"columns": ["content"], "data": [[content]] * batch}}

                def call(p: dict = payload) -> None:
                    status, body = server.post(p)
                    if status != 200 or any(r["error"] for r in json.loads(body)["predictions"]):
                        raise RuntimeError(f"serving failed: HTTP {status}: {body[:300]}")

                rows.append(row("REST, mlflow models serve", batch, timed(call, a.requests)))
        finally:
            server.stop()
    load_after = load_average()
    table = markdown_table(["how", "scans per request", "requests", "scans/s", "p50 ms", "p95 ms"], rows, right=(1, 2, 3, 4, 5))
    body = "\n".join([
        "## Serving: scans/s and request latency (`bench_serving.py`)", "",
        *header("bench_serving.py", argv, load_before, load_after, "mlflow", "monai"),
        f"- model: {a.backbone} at {a.size} px (random init, logged and registered as a comparison's model); "
        f"each scan: `{a.scan.name}` ({a.scan.stat().st_size // 1024} KiB DICOM) as base64 `content`",
        "- REST: one `mlflow models serve --env-manager local` worker on 127.0.0.1, `dataframe_split` JSON, requests one "
        "after another; in-process: `mlflow.pyfunc.load_model(uri).predict(frame)` in the benchmark's process", "",
        table, "",
        "The REST rows against the worker-thread rows are what the server adds (JSON, HTTP, base64 in and out). "
        "The main-thread rows differ from the worker-thread rows only by torch's intra-op threads: a worker thread "
        "computes on one, the main thread on all of them, which on a busy machine (see the load average) mostly "
        "wait on each other. Batched requests share one forward pass per 16 scans. CPU only: the pyfunc scores on "
        "the CPU, and no GPU was lent to this run.",
    ])
    publish(body, "bench_serving", a.results, a.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
