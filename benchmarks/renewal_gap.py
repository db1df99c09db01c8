"""``python -m benchmarks.renewal_gap``: runs scenarios/renewal_gap.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.renewal_gap import main

if __name__ == "__main__":
    main()
