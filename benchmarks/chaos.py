"""``python -m benchmarks.chaos``: runs scenarios/chaos.py, whose docstring says what it
measures and how."""

from benchmarks.scenarios.chaos import main

if __name__ == "__main__":
    main()
