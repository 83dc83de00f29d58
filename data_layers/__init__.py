"""data_layers package."""
