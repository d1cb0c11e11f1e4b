"""Runtimes: one per model format, each turning a loaded artifact into predictions.

``base`` is the interface the DataPlane sees (input checks, the outputs a model offers, predict
over a coalesced batch, metadata), so protocols and transports never learn what a scikit-learn
estimator or an MLflow directory is. ``sklearn`` is the scikit-learn runtime (estimator files
loaded by ``sklearn_model``, tree forests served by ``forest``). An import-linter contract keeps
the protocol side to ``base`` alone.
"""
