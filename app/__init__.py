"""clipsearch's browser UI (Streamlit); see issue 5."""
