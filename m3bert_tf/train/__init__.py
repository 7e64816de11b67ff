"""Training: where data, model and distribution meet."""
