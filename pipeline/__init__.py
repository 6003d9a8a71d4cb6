"""The lip-sync engine, ComfyUI-free: media I/O, shots and faces, audio features, engines, blending."""
