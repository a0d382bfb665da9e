"""The app's views: each ``render(...)`` draws one part of the page with Streamlit."""
