"""The modeldeploy model server: pulls one scikit-learn model and serves KServe V1 and Open Inference Protocol V2."""
