"""Keras models: the encoder (M2BERT backbone) and task models built on it."""
