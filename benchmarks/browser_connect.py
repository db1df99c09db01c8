"""``python -m benchmarks.browser_connect``: runs scenarios/browser_connect.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.browser_connect import main

if __name__ == "__main__":
    main()
