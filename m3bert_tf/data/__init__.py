"""TFRecord shards and tf.data pipelines. TensorFlow only: no Keras."""
