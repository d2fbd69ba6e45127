"""mcscale: scaling-law studies of Memory Caching recurrent models against Transformers."""

__version__ = "0.1.0"
