"""Programs that tests run as separate processes (`python -m tests.processes.<name>`)."""
