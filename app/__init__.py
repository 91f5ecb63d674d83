"""Streamlit UI and the command line: a thin shell over study/, alignment/ and db/."""
