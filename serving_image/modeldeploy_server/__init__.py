"""The modeldeploy model server.

It pulls one scikit-learn model at start and serves it over KServe V1 and the Open Inference
Protocol (V2) from a single generic image.
"""

__version__ = "0.1.0"
