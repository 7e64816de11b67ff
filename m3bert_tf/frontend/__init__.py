"""The 324-dim features as TensorFlow ops: waveform in, features out.

    front = FrontEnd(FeatureConfig(), normalization="track")
    features, frame_lengths = front(waveform, lengths)   # [B, S] at 44.1 kHz, [B]

TensorFlow core ops only (no Keras, no tensorflow-io, no py_function), so an
exported SavedModel that holds it loads in stock TensorFlow Serving. The
filter banks (mel, chroma, CQT kernels) are built once with librosa, when the
front end is built, and stored as constants. See `features.py`.
"""

from m3bert_tf.frontend.features import FrontEnd  # noqa: F401
