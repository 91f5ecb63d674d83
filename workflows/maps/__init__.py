"""Embedding maps: loading representations, analysis, figures and reports (no Streamlit)."""
