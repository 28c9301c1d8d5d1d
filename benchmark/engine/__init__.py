"""The pretraining engine: loop, views, checkpoints, signals, model and optimizer wiring, epoch log."""
