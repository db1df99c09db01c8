"""``python -m benchmarks.micro``: runs scenarios/micro.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.micro import main

if __name__ == "__main__":
    main()
