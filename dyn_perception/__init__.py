"""Adaptive early-exit CNN perception for embedded robots with several Edge TPUs."""
