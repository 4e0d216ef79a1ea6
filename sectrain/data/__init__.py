"""Data: sources (where images come from), augment (paper recipes), pipeline (tf.data)."""
