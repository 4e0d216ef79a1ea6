"""Data: sources (where images come from), augment (paper recipes), pipeline (tf.data)."""

# files the image readers decode (`data=folder`, `sectrain-predict`)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
