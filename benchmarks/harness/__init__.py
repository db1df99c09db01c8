"""What every benchmark stands on: processes, stand-in launchers, provenance, results files."""
