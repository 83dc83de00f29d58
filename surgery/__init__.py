"""surgery package."""
