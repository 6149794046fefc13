"""Alt text: write captions where readers find them, into photo metadata (metadata.py) and HTML pages (html.py)."""
