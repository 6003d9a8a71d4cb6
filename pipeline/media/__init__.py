"""Media: frame sequences (in memory or streamed from a file), video decoding and encoding, audio tracks.

Nothing here knows about faces or networks. ``frames`` holds the :class:`~.frames.Frames` protocol and the one
uint8 <-> float rule; ``video`` decodes (PyAV, streaming) and encodes; ``audio`` loads and resamples voice tracks.
"""
