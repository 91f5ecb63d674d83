"""Foundation shared by every layer: the config loader, atomic file writes, the data-directory setting.

Imports no project code, no Streamlit and no torch, so that db/ and alignment/ can use it and stay standalone.
"""
