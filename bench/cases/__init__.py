"""One module per benchmark case; each has ``run(sizes, scratch) -> dict`` of JSON-ready figures."""
