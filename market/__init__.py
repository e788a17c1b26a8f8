"""The market: the catalogue (what is asked), the engine (who works on what), quality (how well)."""
