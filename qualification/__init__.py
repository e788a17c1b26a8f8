"""crowdmarket qualification package."""
