"""Backends: the generators that redraw the lower face (MuseTalk v1.5, LatentSync 1.5/1.6).

Each engine module holds one network pipeline numerically faithful to its original; ``blending`` and
``latentsync_align`` paste the generated face back into the frame.
"""
