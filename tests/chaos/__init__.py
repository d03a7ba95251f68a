"""The seeded chaos run: one client, one fault-injecting reference server, N tasks (issue 7)."""
