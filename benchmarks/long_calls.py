"""``python -m benchmarks.long_calls``: runs scenarios/long_calls.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.long_calls import main

if __name__ == "__main__":
    main()
