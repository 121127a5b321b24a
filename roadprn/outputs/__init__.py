"""How outputs reach the disk: atomic files (temporary name, rename when done) and a run's
staging folder whose outputs are published together."""
