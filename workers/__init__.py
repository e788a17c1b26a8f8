"""Identity, roles, API tokens and login; later per-worker quality stats and the worker UI."""
