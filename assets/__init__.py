"""The embedded demo's trained weights and the script that trained them."""
