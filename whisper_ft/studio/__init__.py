"""The studio: the whole fine-tuning loop in a local web page (see server.py)."""
