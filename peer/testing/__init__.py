"""Test support shipped with the package: an in-process swarm over memory links and the anonymity
recorder's joins (DESIGN §11).  Imported by tests, benchmarks and the demo only."""
