"""Declarative door-controller configuration: profiles, validation, diff and push."""
