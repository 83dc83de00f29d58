"""fcn package."""
