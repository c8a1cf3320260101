"""Drivers: interchangeable I/O around the sans-I/O core (``sim``: virtual clock; ``aiortc``: real WebRTC)."""
