"""crowdmarket aggregation package."""
