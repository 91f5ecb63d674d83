"""Researcher-side pages."""
