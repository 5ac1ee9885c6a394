"""Training functions that ship with maggy, for the demo, the tests and benchmarks.

- :mod:`maggy_core.examples.digits`: a Keras MLP on scikit-learn's bundled digits
  data (needs the ``keras`` extra; TensorFlow is imported inside the function).
- :mod:`maggy_core.examples.sleep`: functions that only sleep and report a
  synthetic learning curve (no dependencies), to test and time the engine itself.

Importing these modules is cheap: neither imports TensorFlow or Keras at module level.
"""
