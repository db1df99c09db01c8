"""``python -m benchmarks.page_failover``: runs scenarios/page_failover.py, whose docstring
says what it measures and how."""

from benchmarks.scenarios.page_failover import main

if __name__ == "__main__":
    main()
