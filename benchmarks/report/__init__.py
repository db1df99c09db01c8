"""The benchmark tables and the marked blocks of the docs, rendered from results files only."""
