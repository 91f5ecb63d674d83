"""Participant-side study pages and the trial component."""
