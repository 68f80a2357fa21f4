"""Icons and style sheets of the window, shipped as package data."""
