"""``python -m benchmarks.hop_profile``: runs scenarios/hop_profile.py, whose docstring says
what it measures and how."""

from benchmarks.scenarios.hop_profile import main

if __name__ == "__main__":
    main()
