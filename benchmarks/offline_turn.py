"""``python -m benchmarks.offline_turn``: runs scenarios/offline_turn.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.offline_turn import main

if __name__ == "__main__":
    main()
