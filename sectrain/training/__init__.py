"""Training: strategy (devices), optim (optimizers, schedules), loop (the steps)."""
