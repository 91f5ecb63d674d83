"""Streamlit-free workflows: the job runner, pipeline stages, evaluation tables, maps, the demo builder and
the participant API."""
