"""``python -m benchmarks.mouth_to_ear``: runs scenarios/mouth_to_ear.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.mouth_to_ear import main

if __name__ == "__main__":
    main()
