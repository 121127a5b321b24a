"""PatchRefineNet (WACV 2024): the network, per-patch optimal-threshold pseudo-labels, its loss,
refinement of probability maps and whole scenes, and its training (see docs/prn.md)."""
