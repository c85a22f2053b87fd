"""Kubernetes I/O: the only package (with handlers/) that talks to the API server."""
