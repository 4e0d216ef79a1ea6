"""Prints the README's model table (Markdown) from `sectrain-models --json` output.

sectrain-models --json > models.json && python scripts/models_table.py models.json
"""

import json
import sys
from pathlib import Path


def main(path):
    rows = json.loads(Path(path).read_text())
    print("| model | input | params | total | GFLOPs | SE params | SE total | SE GFLOPs |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        plain, se = row["plain"], row["attention"]
        print(
            f"| `{row['model']}` | {row['input_size']} | {plain['trainable']:,} | "
            f"{plain['total']:,} | {plain['flops'] / 1e9:.3f} | {se['trainable']:,} | "
            f"{se['total']:,} | {se['flops'] / 1e9:.3f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
