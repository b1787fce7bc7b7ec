"""The shared layer: helpers every app may use and that use no app.

Errors and the retry decision, the plugin registry, circuit breakers, the
outbound HTTP clients, observability (metrics, tracing) and admin helpers.
Nothing here imports whatsapp, leads or dlq (import-linter checks it, see
pyproject.toml); it may use config (settings, logging, redaction).
"""
