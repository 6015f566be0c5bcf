"""Tools around runs: the AOT memory check and PyTorch (stable-audio-tools) export/import."""
