"""Reading run folders and putting them beside the published numbers."""
