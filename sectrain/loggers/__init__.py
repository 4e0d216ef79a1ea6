"""Where metrics go: the console (rich) and the run folder (CSV, JSON lines, TensorBoard)."""
