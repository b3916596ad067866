"""nvcf-lite: the NVIDIA Cloud Functions API on one machine."""

__version__ = "0.1.0"
