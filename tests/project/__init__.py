"""Checks of the project as a whole: package architecture, installation, the prose of docs and results."""
