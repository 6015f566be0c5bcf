"""Checkpoint interchange with PyTorch stable-audio-tools: key map, config schema, safetensors, export/import."""
