"""Keras layers, written with keras.ops only (backend-agnostic Keras 3)."""
