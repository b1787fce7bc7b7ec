"""The classifier plugin interface and how the configured backend is loaded."""
