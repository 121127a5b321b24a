"""Neural network models: base segmentation models, PatchRefineNet, checkpoints."""
