"""``python -m benchmarks.bedrock_cpu``: runs scenarios/bedrock_cpu.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.bedrock_cpu import main

if __name__ == "__main__":
    main()
