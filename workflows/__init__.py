"""Streamlit-free workflows: job runner, pipeline stages, evaluation tables, maps, demo builder, participant API."""
