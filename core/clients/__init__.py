"""Clients for the outside services the actions talk to."""
