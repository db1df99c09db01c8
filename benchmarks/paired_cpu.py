"""``python -m benchmarks.paired_cpu``: runs scenarios/paired_cpu.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.paired_cpu import main

if __name__ == "__main__":
    main()
