"""Soak test of `roadprn batch`: many small scenes, one in five failing on purpose at a random
stage, worker memory sampled over the whole run.

    python scripts/soak_batch.py --scenes 50 --out /tmp/soak

Faults: a text file named .tif ("open"), a truncated GeoTIFF ("validate"), and, injected into
the worker processes by a Dask worker plugin, a read error in the middle of the scene ("read"),
a full disk while the rasters are written ("write") and an error while vectorising
("vectorize"). Every good scene must finish, every bad one must be recorded as failed with
its own error and leave no folder, and worker RSS must not grow from scene to scene.
Prints a JSON report (``--json`` for only that).
"""

from __future__ import annotations

import argparse
import errno
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from distributed import WorkerPlugin

STAGES = ("open", "validate", "read", "write", "vectorize")
INJECTED = ("read", "write", "vectorize")
MESSAGES = {
    "open": "not a readable raster",
    "validate": "truncated or corrupt",
    "read": "soak: injected read error",
    "write": "no space left on device",
    "vectorize": "soak: injected vectorisation error",
}


class FaultPlugin(WorkerPlugin):
    """Dask worker plugin: wraps roadprn functions in each worker to fail for chosen scenes."""

    name = "roadprn-soak-faults"

    def __init__(self, plan: dict[str, str]) -> None:
        self.plan = plan  # scene stem -> injected stage

    def setup(self, worker: Any = None) -> None:  # noqa: C901 - three small wrappers
        import roadprn.infer.base_stage as pipeline
        import roadprn.vectorize.run as vrun
        from roadprn.errors import InputError

        plan = self.plan

        def stage_of(path: Any) -> str | None:
            stem = Path(str(path)).name.split("_")[0].split(".")[0]
            return plan.get(stem)

        if not getattr(pipeline, "_soak_patched", False):
            read_window, to_cog = pipeline.read_window, pipeline.to_cog
            vectorize_source = vrun.vectorize_source
            calls: dict[str, int] = {}

            def failing_read(ds, window, **kw):
                if stage_of(ds.name) == "read":
                    calls[ds.name] = calls.get(ds.name, 0) + 1
                    if calls[ds.name] > 3:  # after a few good tiles: mid-scene
                        raise InputError(f"{ds.name}: soak: injected read error")
                return read_window(ds, window, **kw)

            def failing_cog(src, dst, *args, **kw):
                if stage_of(Path(dst).name) == "write":
                    Path(dst).write_bytes(b"\0" * 8192)
                    raise OSError(errno.ENOSPC, "No space left on device", str(dst))
                return to_cog(src, dst, *args, **kw)

            def failing_vectorize(source, params, **kw):
                if stage_of(source.name) == "vectorize":
                    raise RuntimeError("soak: injected vectorisation error")
                return vectorize_source(source, params, **kw)

            pipeline.read_window, pipeline.to_cog = failing_read, failing_cog
            vrun.vectorize_source = failing_vectorize
            pipeline._soak_patched = True


def make_scenes(folder: Path, n: int, fail_every: int, seed: int, size: int
                ) -> tuple[list[Path], dict[str, str]]:
    """``n`` synthetic scenes; every ``fail_every``-th gets a random fault stage."""
    from roadprn.synth import generate_scene

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    scenes, faults = [], {}
    # stages in a random order, each shuffled round using every stage once: five faults or more
    # cover all of them
    order = [str(s) for _ in range(n // max(fail_every, 1) // len(STAGES) + 1)
             for s in rng.permutation(STAGES)]
    for i in range(n):
        path = folder / f"s{i:03d}.tif"
        generate_scene(path, width=size + int(rng.integers(0, 32)), height=size,
                       seed=seed * 1000 + i, overviews=False)
        for extra in folder.glob(f"s{i:03d}_*"):  # the scene's own truth files are not inputs
            extra.unlink()
        if i % fail_every == fail_every - 1:
            stage = order[len(faults)]
            faults[path.stem] = stage
            if stage == "open":
                path.write_text("this is not a GeoTIFF\n" * 100)
            elif stage == "validate":
                with open(path, "r+b") as fh:
                    fh.truncate(path.stat().st_size // 2)
        scenes.append(path)
    return scenes, faults


def _rss(_: Any = None) -> int:
    import psutil

    return psutil.Process().memory_info().rss


def run_soak(n_scenes: int, out: Path, *, fail_every: int = 5, seed: int = 0, workers: int = 2,
             size: int = 160, model: str | None = None, sample_s: float = 0.5) -> dict[str, Any]:
    """Run the soak; returns the report (outcomes per scene and the RSS samples)."""
    from distributed import Client, LocalCluster

    from roadprn.batch import collect_inputs, run_batch
    from roadprn.batch.manifest import MANIFEST_NAME, latest_scene_records
    from roadprn.config import load_config

    out = Path(out)
    scenes, faults = make_scenes(out / "scenes", n_scenes, fail_every, seed, size)
    model_path = model or _tiny_model(out / "tiny3.pt")
    config = load_config(None, {"model": str(model_path)})
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=40)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    with Client(cluster) as client:
        client.register_plugin(FaultPlugin({k: v for k, v in faults.items() if v in INJECTED}))
        manifest = out / "batch" / MANIFEST_NAME
        t0 = time.perf_counter()

        def sample() -> None:
            while not stop.is_set():
                try:
                    rss = client.run(_rss)
                except Exception:  # noqa: BLE001 - a worker restarting: skip this sample
                    rss = {}
                done = 0
                if manifest.exists():
                    done = len(latest_scene_records(manifest))
                samples.append({"t": round(time.perf_counter() - t0, 2), "scenes_finished": done,
                                "worker_rss_mib": {w.split(":")[-1]: round(v / 2**20, 1)
                                                   for w, v in rss.items()}})
                stop.wait(sample_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            summary = run_batch(collect_inputs([str(p) for p in scenes]), config, out / "batch",
                                client=client)
        finally:
            stop.set()
            sampler.join()
        seconds = time.perf_counter() - t0
    cluster.close()
    records = {Path(r["scene"]).stem: r for r in latest_scene_records(manifest).values()}
    outcome = {stem: {"status": r["status"], "fault": faults.get(stem),
                      "error": r.get("error")} for stem, r in sorted(records.items())}
    return {"scenes": n_scenes, "faults": faults, "seconds": round(seconds, 1),
            "summary": {k: v for k, v in summary.as_dict().items() if k != "failed"},
            "outcome": outcome, "rss": rss_report(samples), "samples": samples}


def rss_report(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per worker: RSS at the first and last quarter of the run and the slope per scene."""
    per_worker: dict[str, list[tuple[int, float]]] = {}
    for s in samples:
        for worker, mib in s["worker_rss_mib"].items():
            per_worker.setdefault(worker, []).append((s["scenes_finished"], mib))
    report = {}
    for worker, points in per_worker.items():
        done = np.array([p[0] for p in points], float)
        mib = np.array([p[1] for p in points], float)
        total = max(done.max(), 1)
        first = mib[(done >= 1) & (done <= total * 0.25)]  # after warm-up (imports, model)
        last = mib[done >= total * 0.75]
        second_half = done >= total / 2
        slope = (float(np.polyfit(done[second_half], mib[second_half], 1)[0])
                 if second_half.sum() > 2 and np.ptp(done[second_half]) > 0 else 0.0)
        report[worker] = {"min_mib": float(mib.min()), "max_mib": float(mib.max()),
                          "first_quarter_median_mib": _median(first),
                          "last_quarter_median_mib": _median(last),
                          "slope_mib_per_scene_second_half": round(slope, 3)}
    return report


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def check(report: dict[str, Any]) -> list[str]:
    """What went wrong, as sentences (empty: every good scene done, every bad one recorded)."""
    problems = []
    for stem, o in report["outcome"].items():
        if o["fault"] is None and o["status"] != "done":
            problems.append(f"{stem}: good scene ended {o['status']}: {o['error']}")
        if o["fault"] is not None:
            if o["status"] != "failed":
                problems.append(f"{stem}: fault at {o['fault']} but status {o['status']}")
            elif MESSAGES[o["fault"]] not in (o["error"] or ""):
                problems.append(f"{stem}: fault at {o['fault']} recorded as {o['error']!r}")
    if len(report["outcome"]) != report["scenes"]:
        problems.append(f"{len(report['outcome'])} scenes in the manifest, "
                        f"{report['scenes']} given")
    return problems


def _tiny_model(path: Path) -> Path:
    import torch

    from roadprn.models.base import build_model
    from roadprn.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("tiny_unet", in_channels=3)
    save_checkpoint(path, model, {
        "kind": "base", "arch": "tiny_unet", "arch_kwargs": {"in_channels": 3},
        "input": {"bands": [1, 2, 3], "gsd_m": 0.5, "tile_size": 64, "halo": 8,
                  "normalization": {"mode": "percentile", "percentiles": [2.0, 98.0]}}})
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=50)
    parser.add_argument("--fail-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=160, help="scene side in pixels")
    parser.add_argument("--model", help="base model checkpoint (default: a tiny random one)")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="roadprn-soak-"))
    try:
        report = run_soak(args.scenes, out, fail_every=args.fail_every, seed=args.seed,
                          workers=args.workers, size=args.size, model=args.model)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    problems = check(report)
    report["problems"] = problems
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(json.dumps({k: v for k, v in report.items() if k not in ("samples", "outcome")},
                         indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
