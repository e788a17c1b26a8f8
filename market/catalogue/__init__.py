"""The catalogue: projects, guidelines, items, imports, batches of HITs, progress, results."""
