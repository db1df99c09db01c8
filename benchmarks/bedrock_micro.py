"""``python -m benchmarks.bedrock_micro``: runs scenarios/bedrock_micro.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.bedrock_micro import main

if __name__ == "__main__":
    main()
