"""voicegate's benchmarks, by role (benchmarks/README.md has the method and the results).

- ``harness/``: what every benchmark stands on: the processes it launches and samples, the
  stand-in launchers, the provenance header and the results files;
- ``systems/``: the systems under test and the peers (the stock aiortc gateway, Pipecat, the
  benchmark's own stand-in process);
- ``scenarios/``: what is measured, one module per scenario;
- ``report/``: the tables and blocks written from the results files, and the plots;
- the modules at this level are the commands (``python -m benchmarks.run``, ``.soak``...).

Imports point down that list: a command imports scenarios, a scenario imports report, systems
and harness, the report reads results files through the harness only.
"""
