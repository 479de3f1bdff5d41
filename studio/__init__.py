"""Speech Studio: dialogue, voice cloning, training and talking video in one self-hosted app."""

__version__ = "0.1.0"
