"""Model SPECs and what a model is made of on disk: architectures, weight files, the checkpoint format, exports."""
