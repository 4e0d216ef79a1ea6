"""Using a trained model: artifacts (loading a run), evaluate, predict, export."""
