"""The one console line of ``roadprn merge``."""

from roadprn.cli.merge import merge_line


def _report(**extra: object) -> dict[str, object]:
    report: dict[str, object] = {"scenes": 4, "path": "run/roadprn_network.gpkg", "roads": 12,
                                 "junctions": 5, "road_length_m": 2345.0, "dst_crs": "EPSG:32611",
                                 "gaps": []}
    report.update(extra)
    return report


def test_line_names_counts_length_and_crs() -> None:
    line = merge_line(_report())
    assert line == ("merged 4 scene(s) into run/roadprn_network.gpkg: 12 roads, 5 junctions, "
                    "2.345 km (EPSG:32611)")


def test_line_lists_gaps_and_resumed_cells() -> None:
    line = merge_line(_report(gaps=[{"name": "a.tif"}, {"name": "b.tif"}], cells_resumed=3))
    assert line.endswith("; 2 gap(s): a.tif, b.tif; 3 cell(s) resumed")
    assert "resumed" not in merge_line(_report(cells_resumed=0))
