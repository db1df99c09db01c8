"""``python -m benchmarks.report``: rewrite every benchmark block from the committed results."""

from benchmarks.report.render import render_all

if __name__ == "__main__":
    for path, name, _ in render_all():
        print(f"{path}: {name}")
