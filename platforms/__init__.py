"""Other crowds (Mechanical Turk, Prolific), each behind the small `Platform` interface of platforms/base.py, so a
third needs no change to the core. Nothing outside this package names a platform.

Today: how a platform's worker arrives on our work page and how the page hands the finished work back
(`Platform.arrival`, `Platform.completion`), and the record tying their assignment to ours (models.py). Bursting
batches to a platform and syncing reviews and bonuses build on these (#10)."""
