"""The composition root: the app factory, configuration, the CLI, job-worker wiring, health, base templates.
Imported only by wsgi.py and the console script."""
