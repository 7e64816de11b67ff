"""Audio decoding and librosa frame features. NumPy and librosa only: no TF, no Keras."""
