"""The merge's R-tree of scene bounds agrees with the plain bounds test."""

import numpy as np

from roadprn.batch.merge import ScenesByBounds, _intersects


def test_reaching_equals_the_bounds_scan_touching_included():
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0, 1000, (2, 300))
    w, h = rng.uniform(0, 80, (2, 300))
    bounds = [(float(a), float(b), float(a + c), float(b + d))
              for a, b, c, d in zip(x0, y0, w, h, strict=True)]
    bounds.append((500.0, 500.0, 500.0, 500.0))  # a degenerate footprint
    index = ScenesByBounds(bounds)
    for window in [(0.0, 0.0, 50.0, 50.0), (480.0, 480.0, 500.0, 500.0),
                   (-10.0, -10.0, -1.0, -1.0), (0.0, 0.0, 2000.0, 2000.0)]:
        assert index.reaching(window) == [i for i, b in enumerate(bounds)
                                          if _intersects(window, b)]
    # a window that only touches a scene's edge reaches it, as the scan says
    x1 = bounds[0][2]
    touching = (x1, bounds[0][1], x1 + 1.0, bounds[0][3])
    assert 0 in index.reaching(touching)
    assert index.reaching(touching) == [i for i, b in enumerate(bounds)
                                        if _intersects(touching, b)]


def test_no_scenes_reach_nothing():
    assert ScenesByBounds([]).reaching((0.0, 0.0, 1.0, 1.0)) == []
