"""Worker quality and ops: scoring, judging, block effects, gold disputes, flags review."""
