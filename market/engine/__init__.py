"""The assignment engine: claims, leases, submits, returns, gold serving."""
