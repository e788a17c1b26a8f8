"""crowdmarket payments package."""
