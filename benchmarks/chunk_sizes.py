"""``python -m benchmarks.chunk_sizes``: runs scenarios/chunk_sizes.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.chunk_sizes import main

if __name__ == "__main__":
    main()
