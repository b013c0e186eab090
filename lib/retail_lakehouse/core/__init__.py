"""Configuration, the table registry, parameters and widgets, and the one error root."""
