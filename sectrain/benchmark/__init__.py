"""sectrain-bench: training and inference throughput, side by side."""
