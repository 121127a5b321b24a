"""The base model over a scene: tile plans, tile reading on Dask threads, the batched
predictor, strip stitching, and the stage that turns a scene into probability and mask COGs."""
