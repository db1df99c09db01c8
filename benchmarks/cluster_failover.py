"""``python -m benchmarks.cluster_failover``: runs scenarios/cluster_failover.py, whose
docstring says what it measures and how."""

from benchmarks.scenarios.cluster_failover import main

if __name__ == "__main__":
    main()
