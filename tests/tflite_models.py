"""Small real TFLite files for tests, made with TensorFlow's own converter (shared by several test files)."""

from __future__ import annotations

import warnings

import numpy as np


def full_int8_tflite(keras_model, samples_nhwc: np.ndarray) -> bytes:
    """A full-integer (int8 weights, activations, input and output) TFLite flatbuffer calibrated on ``samples_nhwc``."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([samples_nhwc[i : i + 1]] for i in range(len(samples_nhwc)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings():  # TF warns that input statistics are unused for full-int8 models
        warnings.simplefilter("ignore", UserWarning)
        return conv.convert()
