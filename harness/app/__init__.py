"""`harness app`: a Streamlit page that shows every selected registered model's reading of uploaded X-rays.

The page (page.py) is a thin script; what it shows is built by plain functions that tests call directly:
readings.py (the side-by-side probability table and where the models disagree), overlay.py (a class
activation map coloured over the image), cards.py (a model card as Markdown). services.py holds the two
things shared by every session of one server process (the model pool and the registry listing) and is
the one place tests replace. launch.py is the command line. Like the rest of the harness, nothing here
imports a deep-learning framework: the workers compute, the harness decodes, resizes and draws.
"""
