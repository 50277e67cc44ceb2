"""Training: the loop, run directories, checkpoints on signals, torchrun, TensorBoard, recipes."""
