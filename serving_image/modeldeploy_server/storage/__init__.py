"""Fetching the model artifact named by STORAGE_URI: the server's only network I/O.

Split by concern so each part can be read and tested alone: ``uri`` parses and redacts the URI
(pure), ``backends`` builds the fsspec filesystem for a scheme, ``failures`` decides what is worth
retrying and turns any failure into a (reason, message) pair, ``selection`` picks the model file
under a prefix, ``archives`` unpacks safely, and ``fetch`` runs the whole download. Nothing here
imports the model loader (an import-linter contract): storage only knows file names, from
``modeldeploy_server.formats``.
"""
