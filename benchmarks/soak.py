"""``python -m benchmarks.soak``: runs scenarios/soak.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.soak import main

if __name__ == "__main__":
    main()
