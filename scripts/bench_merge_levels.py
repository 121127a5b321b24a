"""Merge levels compared (issue #19): vector merge vs probability-level merge on one archive.

    python scripts/bench_merge_levels.py [--size 2048] [--overlap 128] [--workers 2] [--work DIR]

The archive of tests/integration/test_merge.py: a synthetic scene (``--size``²) cut into 3 x 3
scenes overlapping by ``--overlap`` px, the centre one reprojected into the next UTM zone, run
through ``roadprn batch`` (normalised by the dtype range, as the whole scene); the whole scene
through ``roadprn extract``. Both merge levels run on the same run folder and are compared with
the whole scene's network (``compare`` of the test: total length, junctions, dangling road ends
within 20 m of an internal scene border that the whole-scene network lacks, APLS) and timed.
Prints a Markdown table. ``--work`` keeps the scenes and the batch run between calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prepare(work: Path, size: int, overlap: int) -> tuple[Path, Path]:
    """The whole scene's network and the batch run folder of its 3 x 3 cut (made once)."""
    from rasterio.warp import Resampling

    from tests.helpers import invoke
    from tests.integration.test_merge import ORIGIN, SAME_INPUT, cut_grid

    whole = work / "whole" / "s_roads.gpkg"
    run_dir = work / "run"
    if not whole.is_file():
        _ok(invoke("-q", "synth", work / "s.tif", "--size", size, "--origin", ORIGIN))
        _ok(invoke("-q", "extract", work / "s.tif", "-o", work / "whole", *SAME_INPUT))
    if not (run_dir / "roadprn_manifest.jsonl").is_file():
        cut_grid(work / "s.tif", work / "grid", overlap, Resampling.bilinear)
        _ok(invoke("-q", "batch", work / "grid", "-o", run_dir, *SAME_INPUT))
    return whole, run_dir


def _ok(result: object) -> None:
    if getattr(result, "exit_code", 1) != 0:
        raise SystemExit(f"failed: {getattr(result, 'stderr', '')}")


def measure(run_dir: Path, whole: Path, level: str, workers: int) -> dict[str, object]:
    from roadprn.batch.merge import merge_run
    from tests.integration.test_merge import BORDER_M, SAME_END_M, compare

    out = run_dir.parent / f"merged_{level}.gpkg"
    started = time.perf_counter()
    merge_run(run_dir, out, workers=workers, overwrite=True, level=level)
    seconds = time.perf_counter() - started
    m = compare(out, whole, run_dir, border_m=BORDER_M, same_end_m=SAME_END_M)
    return {**m, "seconds": seconds}


def table(rows: dict[str, dict[str, object]]) -> str:
    lines = ["| level | length vs whole | junctions (whole) | new dangling ends ≤ 20 m of a "
             "border | APLS | merge time |", "|---|---|---|---|---|---|"]
    for level, m in rows.items():
        lines.append(f"| {level} | {100 * float(m['length_diff']):+.2f} % | "  # type: ignore[arg-type]
                     f"{m['junctions']} ({m['junctions_whole']}) | {m['dangling']} | "
                     f"{float(m['apls']):.3f} | {float(m['seconds']):.1f} s |")  # type: ignore[arg-type]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, help="Folder kept between calls (default: temp).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        whole, run_dir = prepare(work, args.size, args.overlap)
        rows = {level: measure(run_dir, whole, level, args.workers)
                for level in ("vector", "probability")}
    print(f"{args.size}² synthetic scene, 3 x 3 scenes overlapping by {args.overlap} px "
          "(centre in the next UTM zone) vs `extract` on the whole scene:\n")
    print(table(rows))
    for level, m in rows.items():
        if m["dangling_at"]:
            print(f"\n{level}: dangling ends (x, y, m to the whole's nearest end): "
                  f"{m['dangling_at']}")


if __name__ == "__main__":
    main()
